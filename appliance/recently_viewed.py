"""Each shopper's recently viewed products in memory: a bounded ring per shopper, a bounded number of shoppers.

    ring = ViewRing(size=50, shoppers=100_000)
    ring.add([(7, 914, at)])          # the consumer: customer 7 viewed product 914 at `at` (epoch seconds)
    ring.recent(7, since, 10)         # [(914, at)], newest first; None when memory cannot answer exactly

Exactness: the ring holds every view after its `horizon` (the start of the window it was warmed with, moved
forward only when a shopper is evicted: to that shopper's newest view). So for any shopper, the views after the
horizon are all in memory (an absent shopper has none), and an answer is exact when the horizon is older than
the window asked for or the shopper's ring alone fills the answer; otherwise `recent` says None (read DuckDB).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

GONE_SECONDS = 600.0  # an erased or merged shopper's key is refused this long (batches in flight finish sooner)


class ViewRing:
    def __init__(self, size: int, shoppers: int) -> None:
        self.size = size  # distinct products kept per shopper (the newest)
        self.shoppers = shoppers  # shoppers kept; beyond it the least recently active one is dropped
        self._warmed_from: float | None = None  # the window start of the warm-up (None: not warmed yet)
        self._dropped = float("-inf")  # the newest view of any shopper dropped for room
        self._lock = threading.Lock()
        self._rings: OrderedDict[int, list[tuple[float, int]]] = OrderedDict()  # least recently active first
        self._gone: OrderedDict[int, float] = OrderedDict()  # forgotten keys -> when

    def __len__(self) -> int:
        return len(self._rings)

    @property
    def ready(self) -> bool:
        return self._warmed_from is not None

    @property
    def horizon(self) -> float:
        """Every view after this moment is in memory (inf: not warmed yet)."""
        return float("inf") if self._warmed_from is None else max(self._warmed_from, self._dropped)

    def warm(self, views: Iterable[tuple[int, int, float]], horizon: float) -> None:
        """Views read from DuckDB (customer, product, epoch seconds), complete for every view after `horizon`;
        merged with what the consumer added meanwhile."""
        self.add(views)
        with self._lock:
            self._warmed_from = horizon

    def add(self, views: Iterable[tuple[int, int, float]]) -> None:
        """Views (customer, product, epoch seconds), in any order; a product viewed again moves to its newest time."""
        with self._lock:
            for customer, product, at in views:
                if customer in self._gone:
                    continue
                ring = self._rings.get(customer)
                if ring is None:
                    ring = self._rings[customer] = []
                else:
                    self._rings.move_to_end(customer)
                _insert(ring, product, at, self.size)
            while len(self._rings) > self.shoppers:
                _, dropped = self._rings.popitem(last=False)
                if dropped:  # its views are no longer all in memory: neither are anyone's before this
                    self._dropped = max(self._dropped, dropped[0][0])

    def replace(self, customer: int, views: Sequence[tuple[int, float]]) -> None:
        """One shopper's views read afresh from DuckDB (after a merge moved events to them), merged with the ring."""
        with self._lock:
            ring = self._rings.pop(customer, [])
            for product, at in views:
                _insert(ring, product, at, self.size)
            self._rings[customer] = ring
            self._gone.pop(customer, None)

    def forget(self, customer: int) -> None:
        """An erased (or merged-away) shopper: their ring goes, and views of theirs still in flight are refused."""
        now = time.monotonic()
        with self._lock:
            self._rings.pop(customer, None)
            self._gone[customer] = now
            while self._gone and now - next(iter(self._gone.values())) > GONE_SECONDS:
                self._gone.popitem(last=False)

    def recent(self, customer: int, since: float, limit: int) -> list[tuple[int, float]] | None:
        """The shopper's newest `limit` distinct products viewed at or after `since`, newest first, with when;
        None when memory alone cannot say (not warmed, or views between `since` and the horizon were dropped)."""
        with self._lock:
            ring = list(self._rings.get(customer, ()))
            horizon = self.horizon
        inside = [(product, at) for at, product in ring if at >= since][:limit]
        if horizon <= since or (len(inside) >= limit and inside[-1][1] > horizon):
            return inside
        return None


def _insert(ring: list[tuple[float, int]], product: int, at: float, size: int) -> None:
    """`ring` newest first, one entry per product, at most `size` long."""
    for i, (seen, pid) in enumerate(ring):
        if pid == product:
            if seen >= at:
                return
            del ring[i]
            break
    i = 0
    while i < len(ring) and ring[i][0] > at:
        i += 1
    if i < size:
        ring.insert(i, (at, product))
        del ring[size:]
