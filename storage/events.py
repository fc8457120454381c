"""Events in DuckDB: durable batched appends and the aggregates the feed needs."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np

from appliance.types import NO_IDS, Event
from storage.db import Database
from storage.once import Once, next_ids

MAX_HALF_LIVES = 1000  # popularity: older events weigh 2^-1000 (not 0), see EventStore.popularity


@dataclass(frozen=True)
class Written:
    """What `append_in` did with each event of a batch, in the batch's order."""

    event_ids: list[int]  # the event's new id, or for a repeated key the id stored under it first
    fresh: list[bool]  # False: its key was stored already (or earlier in the batch), nothing was written


@dataclass(frozen=True)
class Appended:
    event_ids: list[int]  # of the events written, in the batch's order
    skipped: int  # duplicates left out


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal values begins in a sorted, non-empty array."""
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


class EventStore:
    """Events, and in front of `purchased` (a feed asks it per request) the set of customers who ever bought
    (a superset is harmless: it only costs a read) and a bounded cache of their purchases. A purchase drops the
    customer's entry as it is written; the consumer drops it again once the event is committed and processed
    (`forget_purchases`), so a read that raced the write is corrected within the consumer's lag."""

    def __init__(self, db: Database, cache_size: int = 20_000) -> None:
        self.db = db
        self.cache_size = cache_size
        self._buyers = {r[0] for r in db.read("SELECT customer_id FROM purchases")}
        self._purchases: OrderedDict[int, frozenset[int]] = OrderedDict()
        self._lock = threading.Lock()

    def append(self, events: Sequence[Event], received_at: datetime) -> list[int]:
        """Write a batch in one transaction (one group commit); durable when this returns. Returns event ids."""
        with self.db.write() as cur:
            return self.append_in(cur, events, received_at).event_ids

    def append_in(self, cur: duckdb.DuckDBPyConnection, events: Sequence[Event], received_at: datetime) -> Written:
        """The same, inside a transaction the caller holds (so the queue message commits with the event).
        An event with a `key` already stored (or earlier in the batch) is not written again: it answers with
        the id stored under that key. Events without a key are always written."""
        if not events:
            return Written([], [])
        keys = [e.key for e in events]
        if all(k is None for k in keys):
            return Written(self._insert(cur, events, received_at), [True] * len(events))
        once = Once(keys, self._known_keys(cur, keys))
        ids = once.ids(self._insert(cur, [events[i] for i in once.rows], received_at))
        if once.first:
            cur.execute(
                """INSERT INTO event_keys (event_key, event_id, stored_at)
                   SELECT unnest($1::VARCHAR[]), unnest($2::BIGINT[]), $3::TIMESTAMP""",
                [list(once.first), [ids[i] for i in once.first.values()], received_at],
            )
        return Written(ids, once.fresh())

    def _insert(self, cur: duckdb.DuckDBPyConnection, events: Sequence[Event], received_at: datetime) -> list[int]:
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
        self._bought_in(cur, [(e.customer_id, e.product_id) for e in events if e.event_name == "product_purchased"])
        return [r[0] for r in rows]

    def forget_keys(self, before: datetime) -> int:
        """Forget the keys of events stored before `before` (the dedupe window's start); how many."""
        with self.db.write() as cur:
            return len(cur.execute("DELETE FROM event_keys WHERE stored_at < ? RETURNING 1", [before]).fetchall())

    def append_new(self, events: Sequence[Event], received_at: datetime, dated: Sequence[bool]) -> Appended:
        """Write, in one transaction, those events not already stored: a dated event equal in (customer, product,
        event_name, ts) to a stored one, or to an earlier one of the batch, is skipped (a re-imported export
        does not double the history). `dated[i]` False: event i's ts is only the time of import, never a
        duplicate. An event with a `key` is stored once per key instead, whatever its content (as `append_in`).
        Set-wise, not a lookup per row: the batch is scanned as numpy columns, a window finds the repeats inside
        it and an anti-join the ones already stored."""
        if not events:
            return Appended([], 0)
        keys = [e.key for e in events]
        keyed = any(k is not None for k in keys)
        with self.db.write() as cur:
            keep = Once(keys, self._known_keys(cur, keys)).rows if keyed else range(len(events))
            kept = [events[i] for i in keep]
            batch = {
                "c": np.fromiter((e.customer_id for e in kept), np.int64, len(kept)),
                "p": np.fromiter((e.product_id for e in kept), np.int64, len(kept)),
                "n": np.array([e.event_name for e in kept], dtype=object),
                "t": np.array([e.ts for e in kept], dtype="datetime64[us]"),
                "r": np.array([e.recommendation_id for e in kept], dtype=object),
                "pos": np.array([e.position for e in kept], dtype=object),
                "d": np.asarray(dated, dtype=bool)[list(keep)] & np.array([e.key is None for e in kept], dtype=bool),
                "i": np.arange(len(kept)),
                "key": np.array([e.key for e in kept], dtype=object),
                # a keyed batch's ids are drawn first, in its order, so its keys can name them (else unused)
                "e": np.asarray(next_ids(cur, "event_seq", len(kept)) if keyed else [0] * len(kept), dtype=np.int64),
            }
            cur.register("import_batch", batch)
            try:
                named = ("event_id, ", "e, ") if keyed else ("", "")  # else drawn on insert, in the batch's order
                rows = cur.execute(
                    f"""INSERT INTO events ({named[0]}customer_id, product_id, event_name, ts, received_at,
                                           recommendation_id, position)
                       SELECT {named[1]}c, p, n, t, $1::TIMESTAMP, r, pos::INTEGER FROM (
                           SELECT *, row_number() OVER (PARTITION BY c, p, n, t, d ORDER BY i) AS k
                           FROM import_batch) AS f
                       WHERE NOT f.d OR (f.k = 1 AND NOT EXISTS (
                           SELECT 1 FROM events e
                           WHERE e.customer_id = f.c AND e.product_id = f.p AND e.event_name = f.n AND e.ts = f.t))
                       ORDER BY f.i
                       RETURNING event_id, customer_id, product_id, event_name""",
                    [received_at],
                ).fetchall()
                if keyed:  # every kept keyed event was written (the key decides, not the content)
                    cur.execute("""INSERT INTO event_keys SELECT key, e, $1::TIMESTAMP FROM import_batch
                                   WHERE key IS NOT NULL""", [received_at])
            finally:
                cur.unregister("import_batch")
            self._bought_in(cur, [(c, p) for _, c, p, name in rows if name == "product_purchased"])
        return Appended([r[0] for r in rows], len(events) - len(rows))

    @staticmethod
    def _known_keys(cur: duckdb.DuckDBPyConnection, keys: Sequence[str | None]) -> dict[str, int]:
        """The stored keys among these, with their event ids (a list scan for a few, a hash join for many)."""
        wanted = sorted({k for k in keys if k is not None})
        few = "SELECT event_key, event_id FROM event_keys WHERE list_contains($1::VARCHAR[], event_key)"
        many = """SELECT event_key, event_id FROM event_keys
                  JOIN (SELECT unnest($1::VARCHAR[]) AS wanted) ON event_key = wanted"""
        return dict(cur.execute(few if len(wanted) <= 1000 else many, [wanted]).fetchall())

    def _bought_in(self, cur: duckdb.DuckDBPyConnection, bought: Sequence[tuple[int, int]]) -> None:
        """Record purchases (customer, product) of events written in the caller's transaction."""
        if not bought:
            return
        with self._lock:
            self._buyers.update(c for c, _ in bought)
        self.forget_purchases(c for c, _ in bought)
        cur.execute(
            """INSERT INTO purchases
               SELECT c, list(DISTINCT p) FROM (SELECT unnest($1::BIGINT[]) AS c, unnest($2::BIGINT[]) AS p)
               GROUP BY c
               ON CONFLICT (customer_id) DO UPDATE
               SET product_ids = list_distinct(list_concat(purchases.product_ids, excluded.product_ids))""",
            [[c for c, _ in bought], [p for _, p in bought]],
        )

    def recent(
        self, customer_ids: Sequence[int], since: datetime | None, limit: int
    ) -> tuple[list[int], dict[int, list[Event]]]:
        """From one read: each customer's newest event id (0 when none, whatever `since`: what a vector derived
        from the history is based on, see UserStore.save), and their `limit` most recent events at or after
        `since` (when given), oldest first, most recent by (ts, event_id)."""
        return self._recent(customer_ids, since, limit, newest=True)

    def histories(
        self, customer_ids: Sequence[int], since: datetime | None, limit: int
    ) -> dict[int, list[Event]]:
        """Each customer's `limit` most recent events (at or after `since`, when given), oldest first."""
        return self._recent(customer_ids, since, limit, newest=False)[1]

    def _recent(
        self, customer_ids: Sequence[int], since: datetime | None, limit: int, newest: bool
    ) -> tuple[list[int], dict[int, list[Event]]]:
        """The customers' events as columns, the newest `limit` of each picked in numpy: a window function
        ranking them in DuckDB cost twice the scan (BENCHMARKS.md "Feed under load", seventeenth round). With
        `newest`, the window is applied here, after each customer's newest id is taken from all their events."""
        cols = self.db.read_numpy(
            """SELECT customer_id, product_id, event_name, ts, event_id FROM events
               WHERE customer_id IN (SELECT unnest($1::BIGINT[])) AND ($2::TIMESTAMP IS NULL OR ts >= $2::TIMESTAMP)""",
            [list(customer_ids), None if newest else since],
        )
        cust, ts, eid = cols["customer_id"], cols["ts"], cols["event_id"]
        order = np.lexsort((eid, ts, cust))  # by customer, then oldest first
        out: dict[int, list[Event]] = {c: [] for c in customer_ids}
        newest_of: dict[int, int] = {}
        if newest and len(order):
            starts = _run_starts(cust[order])
            newest_of = dict(zip(cust[order][starts].tolist(), np.maximum.reduceat(eid[order], starts).tolist(),
                                 strict=True))
        if newest and since is not None:
            order = order[ts[order] >= np.datetime64(since, "us")]
        if len(order):
            starts = _run_starts(cust[order])
            ends = np.repeat(np.r_[starts[1:], len(order)], np.diff(np.r_[starts, len(order)]))
            kept = order[ends - np.arange(len(order)) <= limit]  # the last `limit` of each customer's run
            for c, p, name, at in zip(cust[kept].tolist(), cols["product_id"][kept].tolist(),
                                      cols["event_name"][kept].tolist(), ts[kept].tolist(), strict=True):
                out[c].append(Event(c, p, name, at))
        return [newest_of.get(c, 0) for c in customer_ids], out

    def columns(self, since: datetime | None = None) -> dict[str, np.ndarray]:
        """All events (at or after `since`) as numpy columns: customer_id, product_id, event_name, ts (epoch s)."""
        where, params = ("WHERE ts >= ?", [since]) if since else ("", [])
        return self.db.read_numpy(
            f"SELECT customer_id, product_id, event_name, epoch(ts) AS ts FROM events {where}", params
        )

    def customers(self, since: datetime | None = None, without_vector: bool = False) -> list[int]:
        """Every customer with an event (at or after `since`, when given; only those without a stored user
        vector, when asked), ascending."""
        where = ["ts >= $1::TIMESTAMP" if since else "TRUE"]
        if without_vector:
            where.append("customer_id NOT IN (SELECT customer_id FROM user_vectors)")
        rows = self.db.read(f"SELECT DISTINCT customer_id FROM events WHERE {' AND '.join(where)} ORDER BY 1",
                            [since] if since else [])
        return [r[0] for r in rows]

    def newest(self) -> datetime | None:
        """The time of the newest event (what "now" is for the data: popularity, the training window)."""
        return self.db.read("SELECT max(ts) FROM events")[0][0]

    def count_before(self, before: datetime) -> int:
        return self.db.read("SELECT count(*) FROM events WHERE ts < ?", [before])[0][0]

    def purchased(self, customer_id: int) -> frozenset[int]:
        """The products a customer bought (from memory for most customers)."""
        if (known := self.purchased_cached(customer_id)) is not None:
            return known
        rows = self.db.read("SELECT product_ids FROM purchases WHERE customer_id = ?", [customer_id])
        found = frozenset(rows[0][0]) if rows else NO_IDS
        with self._lock:
            self._purchases[customer_id] = found
            while len(self._purchases) > self.cache_size:
                self._purchases.popitem(last=False)
        return found

    def purchased_cached(self, customer_id: int) -> frozenset[int] | None:
        """The same without touching DuckDB, or None when that would need a read."""
        with self._lock:
            if customer_id not in self._buyers:
                return NO_IDS
            found = self._purchases.get(customer_id)
            if found is not None:
                self._purchases.move_to_end(customer_id)
            return found

    def warm_purchases(self, customer_ids: Sequence[int]) -> None:
        """Read these customers' purchases into the cache in one query (at start-up)."""
        with self._lock:
            wanted = [c for c in customer_ids if c in self._buyers][:self.cache_size]
        rows = self.db.read(
            "SELECT customer_id, product_ids FROM purchases WHERE customer_id IN (SELECT unnest($1::BIGINT[]))",
            [wanted],
        )
        with self._lock:
            for cid, products in rows:
                self._purchases.setdefault(cid, frozenset(products))
            while len(self._purchases) > self.cache_size:
                self._purchases.popitem(last=False)

    def forget_purchases(self, customer_ids: Iterable[int]) -> None:
        with self._lock:
            for cid in customer_ids:
                self._purchases.pop(cid, None)

    def delete_before(self, before: datetime) -> int:
        """Drop raw events older than the retention; how many."""
        with self.db.write() as cur:
            return len(cur.execute("DELETE FROM events WHERE ts < ? RETURNING 1", [before]).fetchall())

    def erase_in(self, cur: duckdb.DuckDBPyConnection, customer_id: int) -> int:
        """Delete every event (their keys and the purchase record) of a customer (a privacy request); how many
        events."""
        cur.execute("DELETE FROM purchases WHERE customer_id = ?", [customer_id])
        cur.execute("DELETE FROM event_keys WHERE event_id IN (SELECT event_id FROM events WHERE customer_id = ?)",
                    [customer_id])
        self.forget_purchases([customer_id])
        return len(cur.execute("DELETE FROM events WHERE customer_id = ? RETURNING 1", [customer_id]).fetchall())

    def move_in(self, cur: duckdb.DuckDBPyConnection, source: int, target: int) -> tuple[int, int]:
        """Give every event and purchase of customer `source` to `target` (merging two ids of one shopper),
        inside the caller's transaction; (events moved, purchased products new to the target)."""
        with self._lock:
            if source in self._buyers:
                self._buyers.add(target)
        self.forget_purchases([source, target])
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
        """Time-decayed weighted event counts per product: sum(weight * 2^(-age / half_life)), the age measured
        from the newest event at or before `now` (not from `now`): a shop whose events are all months old
        still ranks by them, and a live shop's ranking is the same as measured from the clock. Ages are capped
        at MAX_HALF_LIVES half-lives (2^-1000 ~ 1e-301, still above 0 in float64), so every product with an
        event has a popularity above 0 and years-old products still rank by their counts among themselves.
        One shopper's part in a product is capped at the largest weight (one purchase): a single shopper's burst
        of carts cannot make a product popular for everyone.

        Returns (product_ids int64, scores float64); products with no events are absent.
        """
        names, values = list(weights), [float(weights[n]) for n in weights]
        data = self.db.read_numpy(
            """WITH w AS (SELECT unnest($1::VARCHAR[]) AS event_name, unnest($2::DOUBLE[]) AS weight),
                    e AS (SELECT customer_id, product_id, event_name, epoch(ts) AS t FROM events
                          WHERE ts <= $4::TIMESTAMP),
                    newest AS (SELECT max(t) AS t FROM e),
                    per_shopper AS (
                        SELECT e.product_id, sum(w.weight * exp(-$3 * least(newest.t - e.t, $5))) AS part
                        FROM e JOIN w USING (event_name), newest
                        GROUP BY e.customer_id, e.product_id)
               SELECT product_id, sum(least(part, $6)) AS score FROM per_shopper GROUP BY product_id""",
            [names, values, math.log(2) / (half_life_hours * 3600.0), now, MAX_HALF_LIVES * half_life_hours * 3600.0,
             max(values)],
        )
        return np.asarray(data["product_id"], dtype=np.int64), np.asarray(data["score"], dtype=np.float64)
