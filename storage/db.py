"""The DuckDB file: one connection per process, writes serialised, a cursor per thread, versioned migrations."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from appliance.errors import StoreLocked, StoreUnavailable

log = logging.getLogger("appliance.store")


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
)
SCHEMA_VERSION = len(MIGRATIONS)


def to_blobs(vectors: np.ndarray) -> list[bytes]:
    """Vectors are stored as float32 bytes: 5-10x cheaper to write and read through DuckDB than FLOAT[]."""
    return [row.tobytes() for row in np.ascontiguousarray(vectors, dtype=np.float32)]


def from_blobs(blobs: Sequence[bytes], dim: int | None = None) -> np.ndarray:
    """(N, D) float32 from stored vectors (D from the data when not given)."""
    if not len(blobs):
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)


class Database:
    """Owns the single DuckDB connection of the process.

    Reads use a cursor per thread (`read`), so they never wait on ingest; every write goes through
    `write()`, which holds one lock and one transaction, so there is exactly one writer at a time.

    A disk that stops taking writes (read-only, full, failing) turns every write into `StoreUnavailable`
    (nothing acknowledged that is not durable) and `failure` says why. DuckDB invalidates its instance
    after a fatal error (e.g. a CHECKPOINT that cannot write): then reads fail too, and the connection is
    reopened (its WAL replayed) once a probe file can be written in the data directory again; a write or
    `check()` tries that at most once per `RETRY_SECONDS`.
    """

    RETRY_SECONDS = 1.0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._generation = 0  # bumped when the connection is reopened: older thread cursors are dropped
        self._closed = False
        self.failure: str | None = None  # why the store cannot write now, None when it can
        self._invalidated = False  # DuckDB refuses everything until the connection is reopened
        self._retry_at = 0.0
        self._migrate()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"{self.path} is held by another process (is the appliance server running?); "
                    "stop it or send the data through its HTTP API"
                ) from exc
            raise

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (a DuckDB connection sharing the database instance)."""
        held = getattr(self._local, "cursor", None)
        if held is None or held[0] != self._generation:
            with self._cursors_lock:
                cur = self._conn.cursor()
                self._cursors.append(cur)
                held = self._local.cursor = (self._generation, cur)
        return held[1]

    def read(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple]:
        with self._faults():
            return self.cursor().execute(sql, params).fetchall()

    def read_numpy(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> dict[str, Any]:
        with self._faults():
            return self.cursor().execute(sql, params).fetchnumpy()

    @contextmanager
    def snapshot(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Several reads that see one consistent state (a read-only transaction on this thread's cursor)."""
        with self._faults():
            cur = self.cursor()
            cur.begin()
            try:
                yield cur
            finally:
                with suppress(duckdb.Error):
                    cur.rollback()

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction under the writer lock; committed (durable) when the block exits normally.

        Raises StoreUnavailable when the disk does not take the commit (nothing of the block is kept)."""
        with self._write_lock, self._faults():
            self._usable()
            cur = self.cursor()
            cur.begin()
            try:
                yield cur
            except BaseException:
                with suppress(duckdb.Error):
                    cur.rollback()
                raise
            cur.commit()

    def check(self) -> str | None:
        """None when the store can write; otherwise why not (a recovery is tried first, see the class)."""
        if self.failure is None:
            try:
                self._probe()
            except OSError as exc:
                self.failure = f"the data directory {self.path.parent} cannot be written: {exc.strerror}"
                log.error("store unavailable: %s", self.failure)
        if self.failure is not None:
            with self._write_lock, suppress(StoreUnavailable):
                self._usable()
        return self.failure

    @property
    def schema_version(self) -> int:
        return self.read("SELECT max(version) FROM schema_version")[0][0] or 0

    def checkpoint(self) -> None:
        with self._write_lock, self._faults():
            self._usable()
            self.cursor().execute("CHECKPOINT")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock, self._cursors_lock:
            self._close_connection()

    # -- disk faults ---------------------------------------------------------------------------------------
    @contextmanager
    def _faults(self) -> Iterator[None]:
        """Turn DuckDB's I/O failures into StoreUnavailable and remember them (other errors pass through)."""
        try:
            yield
        except duckdb.ConnectionException as exc:  # a cursor closed under a read by a reopen: retry later
            raise StoreUnavailable("the store is being reopened; try again") from exc
        except duckdb.Error as exc:
            message = str(exc)
            fatal = isinstance(exc, duckdb.FatalException) or "invalidated" in message
            if not (fatal or isinstance(exc, duckdb.IOException) or "Failed to commit" in message):
                raise
            self._invalidated = self._invalidated or fatal
            if self.failure is None:
                log.error("store unavailable: %s", message)
            self.failure = f"the store cannot write: {message.splitlines()[0]}"
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
            raise StoreUnavailable(self.failure) from exc

    def _usable(self) -> None:
        """Under the writer lock: pass when healthy or recovered now; raise StoreUnavailable otherwise."""
        if self.failure is None:
            return
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(self.failure)
        self._retry_at = time.monotonic() + self.RETRY_SECONDS
        try:
            self._probe()
            if self._invalidated:
                with self._cursors_lock:
                    self._close_connection()
                    self._conn = self._connect()  # replays the WAL: every acknowledged commit is back
                    self._generation += 1
                self._invalidated = False
        except (OSError, duckdb.Error) as exc:
            self.failure = f"the store cannot write: {str(exc).splitlines()[0]}"
            raise StoreUnavailable(self.failure) from exc
        log.warning("store writable again (was: %s)", self.failure)
        self.failure = None

    def _probe(self) -> None:
        """Write (and remove) a small file beside the database: raises OSError when the disk refuses."""
        probe = self.path.parent / f".{self.path.name}.probe"
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()

    def _close_connection(self) -> None:
        for cur in self._cursors:
            with suppress(duckdb.Error):
                cur.close()
        self._cursors.clear()
        with suppress(duckdb.Error):
            self._conn.close()

    def _migrate(self) -> None:
        with self.write() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP)")
            current = cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {current}, newer than this appliance ({SCHEMA_VERSION})"
                )
            for version in range(current, SCHEMA_VERSION):
                for step in MIGRATIONS[version]:
                    if callable(step):
                        step(cur)
                    else:
                        cur.execute(step)
                cur.execute(
                    "INSERT INTO schema_version VALUES (?, current_localtimestamp())", [version + 1]
                )
