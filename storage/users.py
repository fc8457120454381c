"""Serving user vectors in DuckDB (the hnswlib user index mirrors this table)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np

from storage.db import VECTOR_PAGE, Database, VectorPage, blob_pages, from_blobs, joined, to_blobs


@dataclass(frozen=True, slots=True)
class UserVector:
    customer_id: int
    vector: np.ndarray  # (D,) float32, unit length
    model_version: str  # the tower version, or "mean" for the no-model fallback
    updated_at: datetime
    last_event_at: datetime  # the newest event the vector was computed from


class UserStore:
    """The table, with a bounded in-memory cache in front of `get` (the feed's hot path): this process is the only
    writer, so every write updates the cache; a read that raced a write is simply not cached."""

    def __init__(self, db: Database, cache_size: int = 20_000) -> None:
        self.db = db
        self.cache_size = cache_size
        self._cache: OrderedDict[int, UserVector | None] = OrderedDict()  # None: known to have no vector
        self._writes = 0  # bumped by every write, so a read that overlapped one does not fill the cache
        self._touched: set[int] | None = None  # while `warm` reads: the customers written meanwhile
        self._lock = threading.Lock()
        # every customer with a stored vector, so a shopper without one (most visitors) costs no read
        self._stored = {r[0] for r in db.read("SELECT customer_id FROM user_vectors")}

    def _remember(self, entries: dict[int, UserVector | None]) -> None:
        with self._lock:
            self._writes += 1
            if self._touched is not None:
                self._touched.update(entries)
            for cid, value in entries.items():
                if value is None:
                    self._stored.discard(cid)
                else:
                    self._stored.add(cid)
                self._cache[cid] = value
                self._cache.move_to_end(cid)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def save(
        self, customer_ids: Sequence[int], vectors: np.ndarray | None, model_version: str,
        last_event_at: Sequence[datetime], now: datetime, basis: Sequence[int] | None = None,
        gone: Sequence[int] = (), also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> list[int]:
        """Store vectors; returns the customers whose vector was stored.

        `basis` is, per customer, the newest event id the vector was computed from (read before the history).
        A vector is stored only while that event still exists and is still the customer's, checked inside the
        writer's transaction: an erasure or a merge (or anything else that deleted or moved the event) since the
        read wins, and the vector is dropped.
        None stores unconditionally (bulk loads that do not come from events).
        The same transaction deletes the vectors of `gone` (no history left) and runs `also` (e.g. the consumer's
        delete of the queue messages these vectors answer): all of it commits, or none of it does.
        """
        ids, gone = list(customer_ids), list(gone)
        if not ids and not gone and also is None:
            return []
        vectors = np.asarray(vectors, dtype=np.float32) if ids else None
        saved: set[int] = set()
        try:
            with self.db.write() as cur:
                if gone:
                    self.delete_in(cur, gone)
                if ids:
                    saved = self._insert_in(cur, ids, vectors, model_version, last_event_at, now, basis)
                if also is not None:
                    also(cur)
                # under the writer lock, so the cache sees writes in their commit order
                self._remember({
                    cid: UserVector(cid, vectors[i], model_version, now, last_event_at[i])
                    for i, cid in enumerate(ids) if cid in saved
                })
        except BaseException:
            self.forget(ids)
            raise
        finally:
            if gone:
                self.forget(gone)
        return [cid for cid in ids if cid in saved]

    @staticmethod
    def _insert_in(
        cur: duckdb.DuckDBPyConnection, ids: list[int], vectors: np.ndarray, model_version: str,
        last_event_at: Sequence[datetime], now: datetime, basis: Sequence[int] | None,
    ) -> set[int]:
        """`save`'s INSERT inside the caller's transaction; the customers stored."""
        params = [ids, to_blobs(vectors), model_version, now, list(last_event_at), list(basis or [0] * len(ids))]
        keep = ""
        if basis is not None:
            keep = """WHERE EXISTS (SELECT 1 FROM events e
                                    WHERE e.event_id = b AND e.customer_id = c AND e.event_id BETWEEN $7 AND $8)"""
            params += [min(basis), max(basis)]
        return {row[0] for row in cur.execute(
            f"""INSERT OR REPLACE INTO user_vectors
                SELECT c, v, $3, $4::TIMESTAMP, t FROM (
                    SELECT unnest($1::BIGINT[]) AS c, unnest($2::BLOB[]) AS v, unnest($5::TIMESTAMP[]) AS t,
                           unnest($6::BIGINT[]) AS b) {keep}
                RETURNING customer_id""",
            params,
        ).fetchall()}

    def cached(self, customer_id: int) -> tuple[bool, UserVector | None]:
        """(known, vector) from memory only: known is False when answering needs a read."""
        with self._lock:
            if customer_id not in self._stored:
                return True, None
            if customer_id in self._cache:
                self._cache.move_to_end(customer_id)
                return True, self._cache[customer_id]
            return False, None

    def warm(self) -> list[int]:
        """Fill the cache with the most recently active shoppers' vectors (at start-up); their ids."""
        with self._lock:
            self._touched = set()
        rows: list[tuple] = []
        vectors: np.ndarray | list = []
        try:
            rows = self.db.read(
                """SELECT customer_id, vector, model_version, updated_at, last_event_at FROM user_vectors
                   ORDER BY last_event_at DESC LIMIT ?""",
                [self.cache_size],
            )
            vectors = from_blobs([r[1] for r in rows]) if rows else []
        finally:
            with self._lock:
                touched, self._touched = self._touched or set(), None
                # a customer written or forgotten since the read began (the consumer works through a backlog at
                # start-up) must not get the older vector read here; every other one is warmed
                for (cid, _, version, updated, last), vector in zip(rows, vectors, strict=True):
                    if cid not in touched:
                        self._cache.setdefault(cid, UserVector(cid, vector, version, updated, last))
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [r[0] for r in rows]

    def get(self, customer_id: int) -> UserVector | None:
        known, found = self.cached(customer_id)
        if known:
            return found
        with self._lock:
            writes = self._writes
        rows = self.db.read(
            """SELECT customer_id, vector, model_version, updated_at, last_event_at
               FROM user_vectors WHERE customer_id = ?""",
            [customer_id],
        )
        found = None
        if rows:
            cid, vector, version, updated, last = rows[0]
            found = UserVector(cid, from_blobs([vector])[0], version, updated, last)
        with self._lock:
            if self._writes == writes:  # no write overlapped this read: safe to remember
                self._cache[customer_id] = found
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return found

    @staticmethod
    def delete_in(cur: duckdb.DuckDBPyConnection, customer_ids: Sequence[int]) -> int:
        """Delete vectors inside the caller's transaction (call `forget` after it ends); how many."""
        return len(cur.execute(
            "DELETE FROM user_vectors WHERE customer_id IN (SELECT unnest($1::BIGINT[])) RETURNING 1",
            [list(customer_ids)],
        ).fetchall())

    def forget(self, customer_ids: Sequence[int]) -> None:
        """Drop cached entries, so the next `get` reads DuckDB (always safe)."""
        with self._lock:
            self._writes += 1
            if self._touched is not None:
                self._touched.update(customer_ids)
            for cid in customer_ids:
                self._cache.pop(cid, None)

    def expire(self, before: datetime) -> list[int]:
        """Drop vectors whose newest event is older than `before` (outside the serving window); their ids."""
        with self.db.write() as cur:
            rows = cur.execute(
                "DELETE FROM user_vectors WHERE last_event_at < ? RETURNING customer_id", [before]
            ).fetchall()
        expired = [r[0] for r in rows]
        self._remember(dict.fromkeys(expired))
        return expired

    def count(self) -> int:
        return self.db.read("SELECT count(*) FROM user_vectors")[0][0]

    def vector_ids(self) -> np.ndarray:
        """The ids of the stored vectors, sorted: `vectors(None)`'s ids without reading a vector."""
        found = self.db.read_numpy("SELECT customer_id FROM user_vectors ORDER BY customer_id")
        return np.asarray(found["customer_id"], dtype=np.int64)

    def vectors(self, changed_since: datetime | None = None) -> tuple[np.ndarray, np.ndarray, datetime | None]:
        """`vector_pages` in one answer: ids, vectors, the newest updated_at."""
        return joined(self.vector_pages(changed_since))

    def vector_pages(self, changed_since: datetime | None = None, rows: int = VECTOR_PAGE) -> Iterator[VectorPage]:
        """(ids, vectors, newest updated_at) of vectors changed since a time (all when None), in pages of `rows`
        read in one snapshot (at least one page, maybe empty; the newest time of the whole answer on each)."""
        where, params = ("WHERE updated_at > ?", [changed_since]) if changed_since else ("", [])
        with self.db.snapshot() as cur:
            newest = cur.execute(f"SELECT max(updated_at) FROM user_vectors {where}", params).fetchone()[0]
            result = cur.execute(f"SELECT customer_id, vector FROM user_vectors {where} ORDER BY customer_id", params)
            yield from blob_pages(result, rows, changed_since if newest is None else newest)
