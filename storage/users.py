"""Serving user vectors in DuckDB (the hnswlib user index mirrors this table)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from storage.db import Database, from_blobs, to_blobs


@dataclass(frozen=True, slots=True)
class UserVector:
    customer_id: int
    vector: np.ndarray  # (D,) float32, unit length
    model_version: str  # the tower version, or "mean" for the no-model fallback
    updated_at: datetime
    last_event_at: datetime  # the newest event the vector was computed from


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(
        self, customer_ids: Sequence[int], vectors: np.ndarray, model_version: str,
        last_event_at: Sequence[datetime], now: datetime,
    ) -> None:
        if not len(customer_ids):
            return
        with self.db.write() as cur:
            cur.execute(
                """INSERT OR REPLACE INTO user_vectors
                   SELECT * FROM (SELECT unnest($1::BIGINT[]), unnest($2::BLOB[]), $3, $4::TIMESTAMP,
                                         unnest($5::TIMESTAMP[]))""",
                [list(customer_ids), to_blobs(vectors), model_version, now, list(last_event_at)],
            )

    def get(self, customer_id: int) -> UserVector | None:
        rows = self.db.read(
            """SELECT customer_id, vector, model_version, updated_at, last_event_at
               FROM user_vectors WHERE customer_id = ?""",
            [customer_id],
        )
        if not rows:
            return None
        cid, vector, version, updated, last = rows[0]
        return UserVector(cid, from_blobs([vector])[0], version, updated, last)

    def delete(self, customer_ids: Sequence[int]) -> int:
        with self.db.write() as cur:
            return len(cur.execute(
                "DELETE FROM user_vectors WHERE customer_id IN (SELECT unnest($1::BIGINT[])) RETURNING 1",
                [list(customer_ids)],
            ).fetchall())

    def expire(self, before: datetime) -> list[int]:
        """Drop vectors whose newest event is older than `before` (outside the serving window); their ids."""
        with self.db.write() as cur:
            rows = cur.execute(
                "DELETE FROM user_vectors WHERE last_event_at < ? RETURNING customer_id", [before]
            ).fetchall()
        return [r[0] for r in rows]

    def count(self) -> int:
        return self.db.read("SELECT count(*) FROM user_vectors")[0][0]

    def vectors(self, changed_since: datetime | None = None) -> tuple[np.ndarray, np.ndarray, datetime | None]:
        """(ids, vectors, newest updated_at) of vectors changed since a time (all when None)."""
        where, params = ("WHERE updated_at > ?", [changed_since]) if changed_since else ("", [])
        data = self.db.read_numpy(
            f"SELECT customer_id, vector, updated_at FROM user_vectors {where} ORDER BY customer_id", params
        )
        ids = np.asarray(data["customer_id"], dtype=np.int64)
        if not len(ids):
            return ids, np.zeros((0, 0), np.float32), changed_since
        newest = np.max(data["updated_at"]).astype("datetime64[us]").item()
        return ids, from_blobs(data["vector"]), newest
