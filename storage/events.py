"""Events in DuckDB: durable batched appends and the aggregates the feed needs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

from appliance.types import Event
from storage.db import Database


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, events: Sequence[Event], received_at: datetime) -> list[int]:
        """Write a batch in one transaction (one group commit); durable when this returns. Returns event ids."""
        if not events:
            return []
        with self.db.write() as cur:
            rows = cur.execute(
                """INSERT INTO events (customer_id, product_id, event_name, ts, received_at)
                   SELECT * FROM (SELECT unnest($1::BIGINT[]), unnest($2::BIGINT[]), unnest($3::VARCHAR[]),
                                         unnest($4::TIMESTAMP[]), $5::TIMESTAMP)
                   RETURNING event_id""",
                [
                    [e.customer_id for e in events], [e.product_id for e in events],
                    [e.event_name for e in events], [e.ts for e in events], received_at,
                ],
            ).fetchall()
        return [r[0] for r in rows]

    def count(self) -> int:
        return self.db.read("SELECT count(*) FROM events")[0][0]

    def popularity(
        self, now: datetime, half_life_hours: float, weights: Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Time-decayed weighted event counts per product: sum(weight * 2^(-age / half_life)).

        Returns (product_ids int64, scores float64); products with no events are absent.
        """
        names, values = list(weights), [float(weights[n]) for n in weights]
        data = self.db.read_numpy(
            """WITH w AS (SELECT unnest($1::VARCHAR[]) AS event_name, unnest($2::DOUBLE[]) AS weight)
               SELECT e.product_id, sum(w.weight * exp(-$3 * (epoch($4::TIMESTAMP) - epoch(e.ts)))) AS score
               FROM events e JOIN w USING (event_name) WHERE e.ts <= $4::TIMESTAMP
               GROUP BY e.product_id""",
            [names, values, math.log(2) / (half_life_hours * 3600.0), now],
        )
        return np.asarray(data["product_id"], dtype=np.int64), np.asarray(data["score"], dtype=np.float64)

    def for_customer(self, customer_id: int, limit: int) -> list[Event]:
        rows = self.db.read(
            """SELECT customer_id, product_id, event_name, ts FROM events
               WHERE customer_id = ? ORDER BY ts DESC, event_id DESC LIMIT ?""",
            [customer_id, limit],
        )
        return [Event(*row) for row in rows]
