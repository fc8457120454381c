"""The schema's versioned migrations (storage/db.py applies them in order when it opens a file).

Each migration moves the schema from version i to i + 1; never edit one that has shipped, append another.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb


def _start_key_sequences(cur: duckdb.DuckDBPyConnection) -> None:
    """New keys start above every key the migration kept (the old integer ids)."""
    for kind in ("product", "customer"):
        top = cur.execute(f"SELECT coalesce(max(key), 0) FROM {kind}_ids").fetchone()[0]
        cur.execute(f"CREATE SEQUENCE {kind}_key_seq START WITH {int(top) + 1}")


# Integer ids (as the JSON of old queue bodies holds them) of one field of the live and dead-lettered messages.
_QUEUED = """SELECT CAST(json_extract_string(body, '$.{0}') AS BIGINT) FROM queue_messages
             WHERE json_type(body, '$.{0}') IN ('BIGINT', 'UBIGINT')"""

# Each migration moves the schema from version i to i + 1; never edit one that has shipped, add another.
# A step is one SQL statement, or a function of the cursor for what SQL alone cannot say.
MIGRATIONS: tuple[tuple[str | Callable[[duckdb.DuckDBPyConnection], None], ...], ...] = (
    (
        """CREATE TABLE products (
            product_id BIGINT PRIMARY KEY,
            name VARCHAR NOT NULL,
            merchant VARCHAR,
            category_path VARCHAR[] NOT NULL,
            color VARCHAR,
            price DOUBLE,
            in_stock BOOLEAN NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            text VARCHAR NOT NULL,
            text_hash VARCHAR NOT NULL
        )""",
        # Vectors are cached by the hash of (model, text): an unchanged product line is never re-embedded.
        "CREATE TABLE embeddings (text_hash VARCHAR PRIMARY KEY, vector BLOB NOT NULL)",
        "CREATE SEQUENCE event_seq START 1",
        """CREATE TABLE events (
            event_id BIGINT NOT NULL DEFAULT nextval('event_seq'),
            customer_id BIGINT NOT NULL,
            product_id BIGINT NOT NULL,
            event_name VARCHAR NOT NULL,
            ts TIMESTAMP NOT NULL,
            received_at TIMESTAMP NOT NULL
        )""",
    ),
    (
        # The durable queue (jobs/queue.py): live and dead-lettered messages, and recent deduplication ids.
        "CREATE SEQUENCE queue_seq START 1",
        """CREATE TABLE queue_messages (
            message_id BIGINT PRIMARY KEY,
            seq BIGINT NOT NULL,
            group_id BIGINT,
            body VARCHAR NOT NULL,
            sent_at TIMESTAMP NOT NULL,
            visible_at TIMESTAMP NOT NULL,
            receive_count INTEGER NOT NULL,
            receipt_handle VARCHAR,
            dead_at TIMESTAMP,
            reason VARCHAR
        )""",
        """CREATE TABLE queue_dedup (
            dedup_id VARCHAR NOT NULL, message_id BIGINT NOT NULL, sent_at TIMESTAMP NOT NULL
        )""",
    ),
    (
        # The Elasticsearch outbox (storage/elastic_outbox.py): what still has to reach the cluster.
        # generation is bumped by each new mark, so a sync removes only the version it sent.
        """CREATE TABLE elastic_outbox (
            kind VARCHAR NOT NULL,
            item_id BIGINT NOT NULL,
            marked_at TIMESTAMP NOT NULL,
            generation INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            last_error VARCHAR,
            PRIMARY KEY (kind, item_id)
        )""",
    ),
    (
        # Serving user vectors: the tower's (or the fallback's) output after a shopper's latest event.
        """CREATE TABLE user_vectors (
            customer_id BIGINT PRIMARY KEY,
            vector BLOB NOT NULL,
            model_version VARCHAR NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            last_event_at TIMESTAMP NOT NULL
        )""",
    ),
    (
        # Runs of the scheduled jobs (jobs/scheduler.py): what ran, when, how long, how it ended.
        """CREATE TABLE job_runs (
            name VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP NOT NULL,
            seconds DOUBLE NOT NULL,
            outcome VARCHAR NOT NULL,
            detail VARCHAR
        )""",
    ),
    (
        # What each shopper bought, kept beside the events so the feed's exclusion is one key lookup.
        "CREATE TABLE purchases (customer_id BIGINT PRIMARY KEY, product_ids BIGINT[] NOT NULL)",
        """INSERT INTO purchases SELECT customer_id, list(DISTINCT product_id) FROM events
           WHERE event_name = 'product_purchased' GROUP BY customer_id""",
    ),
    (
        # The shop's ids (opaque strings) and the dense keys used inside (storage/ids.py). Existing integer
        # ids keep their number as key, their decimal as id; queue bodies and outbox rows carry the shop's ids.
        "CREATE TABLE product_ids (ext VARCHAR PRIMARY KEY, key BIGINT NOT NULL UNIQUE)",
        "CREATE TABLE customer_ids (ext VARCHAR PRIMARY KEY, key BIGINT NOT NULL UNIQUE)",
        f"""INSERT INTO product_ids SELECT k::VARCHAR, k FROM (
                SELECT product_id AS k FROM products UNION SELECT product_id FROM events
                UNION SELECT unnest(product_ids) FROM purchases
                UNION SELECT item_id FROM elastic_outbox WHERE kind = 'product'
                UNION {_QUEUED.format('product_id')})""",
        f"""INSERT INTO customer_ids SELECT k::VARCHAR, k FROM (
                SELECT customer_id AS k FROM events UNION SELECT customer_id FROM user_vectors
                UNION SELECT customer_id FROM purchases
                UNION SELECT item_id FROM elastic_outbox WHERE kind = 'user'
                UNION {_QUEUED.format('customer_id')})""",
        _start_key_sequences,
        # A message group is the shop's customer id (SQS MessageGroupId is a string).
        "ALTER TABLE queue_messages ALTER group_id TYPE VARCHAR",
        # Elasticsearch documents are keyed by the shop's ids, so the outbox holds them (a forgotten id's
        # document can still be deleted). DuckDB cannot retype a key column: the table is copied.
        "ALTER TABLE elastic_outbox RENAME TO elastic_outbox_v6",
        """CREATE TABLE elastic_outbox AS SELECT kind, item_id::VARCHAR AS item_id, marked_at, generation, attempts,
           last_error FROM elastic_outbox_v6""",
        "DROP TABLE elastic_outbox_v6",
        "ALTER TABLE elastic_outbox ADD PRIMARY KEY (kind, item_id)",
        *(f"ALTER TABLE elastic_outbox ALTER {c} SET NOT NULL" for c in ("marked_at", "generation", "attempts")),
    ),
    (
        # Attribution (jobs/attribution.py): what each feed answer showed, one row per item, and the
        # recommendation an event came from (optional, sent back by the shop with the item's 1-based position).
        """CREATE TABLE impressions (
            recommendation_id VARCHAR NOT NULL,
            customer_id BIGINT NOT NULL,
            widget VARCHAR NOT NULL,
            product_id BIGINT NOT NULL,
            position INTEGER NOT NULL,
            source VARCHAR NOT NULL,
            model_version VARCHAR NOT NULL,
            served_at TIMESTAMP NOT NULL
        )""",
        "ALTER TABLE events ADD COLUMN recommendation_id VARCHAR",
        "ALTER TABLE events ADD COLUMN position INTEGER",
    ),
    (
        # Counters of the durable queue that outlive its rows (dead letters dropped by the retention caps).
        "CREATE TABLE queue_counters (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL)",
    ),
    (
        # A product sent without created_at has none (it was the first-seen time): an imported catalog without
        # dates is not made of new arrivals.
        "ALTER TABLE products ALTER COLUMN created_at DROP NOT NULL",
    ),
    (
        # Merchandising rules (storage/rules.py, appliance/rules.py): pins, hides, boosts and buries.
        "CREATE SEQUENCE rule_seq START 1",
        """CREATE TABLE rules (
            rule_id BIGINT PRIMARY KEY DEFAULT nextval('rule_seq'),
            kind VARCHAR NOT NULL,
            product_id BIGINT,
            brand VARCHAR,
            category VARCHAR,
            min_price DOUBLE,
            max_price DOUBLE,
            position INTEGER,
            strength DOUBLE,
            starts_at TIMESTAMP,
            ends_at TIMESTAMP,
            created_at TIMESTAMP NOT NULL
        )""",
    ),
    (
        # Messages bound for SQS, committed with their events; the sender deletes a row once SQS has it.
        "CREATE SEQUENCE sqs_outbox_seq",
        """CREATE TABLE sqs_outbox (
            outbox_id BIGINT PRIMARY KEY DEFAULT nextval('sqs_outbox_seq'),
            group_id VARCHAR,
            body VARCHAR NOT NULL,
            queued_at TIMESTAMP NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0
        )""",
        # Events that arrived by SQS alone (a shop backend publishing there), by arrival key: stored once.
        """CREATE TABLE sqs_arrivals (
            arrival_key VARCHAR PRIMARY KEY,
            stored_at TIMESTAMP NOT NULL
        )""",
    ),
    (
        # The keys of stored events, so an event sent again stores nothing (storage/events.py): a client's
        # event_id from POST /events, or an SQS message's deduplication or message id. Forgotten by the prune job
        # after events.dedupe_window_hours. event_id 0: an SQS arrival recorded before events were named here.
        """CREATE TABLE event_keys (
            event_key VARCHAR PRIMARY KEY,
            event_id BIGINT NOT NULL,
            stored_at TIMESTAMP NOT NULL
        )""",
        "INSERT INTO event_keys SELECT arrival_key, 0, stored_at FROM sqs_arrivals",
        "DROP TABLE sqs_arrivals",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
