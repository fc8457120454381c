"""Events in DuckDB: durable batched appends and the aggregates the feed needs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import duckdb
import numpy as np

from appliance.types import Event
from storage.db import Database


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, events: Sequence[Event], received_at: datetime) -> list[int]:
        """Write a batch in one transaction (one group commit); durable when this returns. Returns event ids."""
        with self.db.write() as cur:
            return self.append_in(cur, events, received_at)

    @staticmethod
    def append_in(cur: duckdb.DuckDBPyConnection, events: Sequence[Event], received_at: datetime) -> list[int]:
        """The same, inside a transaction the caller holds (so the queue message commits with the event)."""
        if not events:
            return []
        rows = cur.execute(
            """INSERT INTO events (customer_id, product_id, event_name, ts, received_at, recommendation_id, position)
               SELECT * FROM (SELECT unnest($1::BIGINT[]), unnest($2::BIGINT[]), unnest($3::VARCHAR[]),
                                     unnest($4::TIMESTAMP[]), $5::TIMESTAMP, unnest($6::VARCHAR[]),
                                     unnest($7::INTEGER[]))
               RETURNING event_id""",
            [
                [e.customer_id for e in events], [e.product_id for e in events],
                [e.event_name for e in events], [e.ts for e in events], received_at,
                [e.recommendation_id for e in events], [e.position for e in events],
            ],
        ).fetchall()
        bought = [(e.customer_id, e.product_id) for e in events if e.event_name == "product_purchased"]
        if bought:
            cur.execute(
                """INSERT INTO purchases
                   SELECT c, list(DISTINCT p) FROM (SELECT unnest($1::BIGINT[]) AS c, unnest($2::BIGINT[]) AS p)
                   GROUP BY c
                   ON CONFLICT (customer_id) DO UPDATE
                   SET product_ids = list_distinct(list_concat(purchases.product_ids, excluded.product_ids))""",
                [[c for c, _ in bought], [p for _, p in bought]],
            )
        return [r[0] for r in rows]

    def newest_ids(self, customer_ids: Sequence[int]) -> list[int]:
        """Each customer's newest event id (0 when none): read before a history, it is what a vector derived
        from that history is based on (see UserStore.save)."""
        rows = dict(self.db.read(
            """SELECT customer_id, max(event_id) FROM events
               WHERE customer_id IN (SELECT unnest($1::BIGINT[])) GROUP BY customer_id""",
            [list(customer_ids)],
        ))
        return [rows.get(c, 0) for c in customer_ids]

    def histories(self, customer_ids: Sequence[int], since: datetime, limit: int) -> dict[int, list[Event]]:
        """Each customer's `limit` most recent events at or after `since`, oldest first."""
        rows = self.db.read(
            """SELECT customer_id, product_id, event_name, ts FROM (
                   SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY ts DESC, event_id DESC) AS rn
                   FROM events WHERE customer_id IN (SELECT unnest($1::BIGINT[])) AND ts >= $2::TIMESTAMP)
               WHERE rn <= $3 ORDER BY customer_id, ts, event_id""",
            [list(customer_ids), since, limit],
        )
        out: dict[int, list[Event]] = {c: [] for c in customer_ids}
        for row in rows:
            out[row[0]].append(Event(*row))
        return out

    def columns(self, since: datetime | None = None) -> dict[str, np.ndarray]:
        """All events (at or after `since`) as numpy columns: customer_id, product_id, event_name, ts (epoch s)."""
        where, params = ("WHERE ts >= ?", [since]) if since else ("", [])
        return self.db.read_numpy(
            f"SELECT customer_id, product_id, event_name, epoch(ts) AS ts FROM events {where}", params
        )

    def purchased(self, customer_id: int) -> set[int]:
        rows = self.db.read("SELECT product_ids FROM purchases WHERE customer_id = ?", [customer_id])
        return set(rows[0][0]) if rows else set()

    def delete_before(self, before: datetime) -> int:
        """Drop raw events older than the retention; how many."""
        with self.db.write() as cur:
            return len(cur.execute("DELETE FROM events WHERE ts < ? RETURNING 1", [before]).fetchall())

    def erase_in(self, cur: duckdb.DuckDBPyConnection, customer_id: int) -> int:
        """Delete every event (and purchase record) of a customer (a privacy request); how many events."""
        cur.execute("DELETE FROM purchases WHERE customer_id = ?", [customer_id])
        return len(cur.execute("DELETE FROM events WHERE customer_id = ? RETURNING 1", [customer_id]).fetchall())

    @staticmethod
    def move_in(cur: duckdb.DuckDBPyConnection, source: int, target: int) -> tuple[int, int]:
        """Give every event and purchase of customer `source` to `target` (merging two ids of one shopper),
        inside the caller's transaction; (events moved, purchased products new to the target)."""
        before = cur.execute(
            "SELECT coalesce(len(any_value(product_ids)), 0) FROM purchases WHERE customer_id = ?", [target]
        ).fetchone()[0]
        cur.execute(
            """INSERT INTO purchases SELECT $2, product_ids FROM purchases WHERE customer_id = $1
               ON CONFLICT (customer_id) DO UPDATE
               SET product_ids = list_distinct(list_concat(purchases.product_ids, excluded.product_ids))""",
            [source, target],
        )
        cur.execute("DELETE FROM purchases WHERE customer_id = ?", [source])
        after = cur.execute(
            "SELECT coalesce(len(any_value(product_ids)), 0) FROM purchases WHERE customer_id = ?", [target]
        ).fetchone()[0]
        moved = cur.execute(
            "UPDATE events SET customer_id = $2 WHERE customer_id = $1 RETURNING 1", [source, target]
        ).fetchall()
        return len(moved), after - before

    def count(self) -> int:
        return self.db.read("SELECT count(*) FROM events")[0][0]

    def popularity(
        self, now: datetime, half_life_hours: float, weights: Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Time-decayed weighted event counts per product: sum(weight * 2^(-age / half_life)), where one
        shopper's part in a product is capped at the largest weight (one purchase): a single shopper's burst
        of carts cannot make a product popular for everyone.

        Returns (product_ids int64, scores float64); products with no events are absent.
        """
        names, values = list(weights), [float(weights[n]) for n in weights]
        data = self.db.read_numpy(
            """WITH w AS (SELECT unnest($1::VARCHAR[]) AS event_name, unnest($2::DOUBLE[]) AS weight),
               per_shopper AS (
                   SELECT e.product_id, sum(w.weight * exp(-$3 * (epoch($4::TIMESTAMP) - epoch(e.ts)))) AS part
                   FROM events e JOIN w USING (event_name) WHERE e.ts <= $4::TIMESTAMP
                   GROUP BY e.customer_id, e.product_id)
               SELECT product_id, sum(least(part, $5)) AS score FROM per_shopper GROUP BY product_id""",
            [names, values, math.log(2) / (half_life_hours * 3600.0), now, max(values)],
        )
        return np.asarray(data["product_id"], dtype=np.int64), np.asarray(data["score"], dtype=np.float64)
