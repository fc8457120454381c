"""Recently viewed products from memory: the consumer feeds each shopper's ring as their events are processed,
start-up warms it from DuckDB for the recently active shoppers, erasure and merge keep it true. A request reads
DuckDB only when the ring cannot answer exactly (not warmed yet, or the shopper's views were dropped for room)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from appliance.recently_viewed import ViewRing
from appliance.types import Event
from storage.baskets import BasketStore

BROWSE = ("product_viewed", "product_clicked")
_EPOCH = datetime(1970, 1, 1)


def epoch(ts: datetime) -> float:
    """Seconds since 1970 of a naive UTC time (the stores' convention)."""
    return (ts - _EPOCH).total_seconds()


class RecentViews:
    def __init__(self, baskets: BasketStore, size: int, shoppers: int, window_days: float,
                 clock: Callable[[], datetime]) -> None:
        self.baskets = baskets
        self.ring = ViewRing(size, shoppers)
        self.window = timedelta(days=window_days)
        self.clock = clock

    def warm(self) -> int:
        """At start-up: the last views of the most recently active shoppers inside the window; how many shoppers."""
        since = self.clock() - self.window
        views = self.baskets.recent_views(BROWSE, since, self.ring.size, self.ring.shoppers)
        self.ring.warm(views, epoch(since))
        return len({c for c, _, _ in views})

    def observe(self, events: Sequence[Event]) -> None:
        """The consumer's processed events: views and clicks join their shopper's ring."""
        self.ring.add((e.customer_id, e.product_id, epoch(e.ts)) for e in events if e.event_name in BROWSE)

    def forget(self, customer_id: int) -> None:
        self.ring.forget(customer_id)

    def reload(self, customer_id: int) -> None:
        """After a merge moved events to this shopper: their ring read afresh from DuckDB."""
        self.ring.replace(customer_id, self.baskets.recently_viewed(
            customer_id, BROWSE, self.clock() - self.window, self.ring.size))

    def in_memory(self, customer_id: int, limit: int) -> list[tuple[int, float]] | None:
        """The shopper's newest `limit` (at most the ring's size) viewed products with when, from memory; None
        when memory cannot answer exactly."""
        since = self.clock() - self.window
        return self.ring.recent(customer_id, epoch(since), min(limit, self.ring.size))

    def get(self, customer_id: int, limit: int) -> list[tuple[int, float]]:
        """The same, from DuckDB when memory cannot answer."""
        found = self.in_memory(customer_id, limit)
        if found is not None:
            return found
        return self.baskets.recently_viewed(customer_id, BROWSE, self.clock() - self.window,
                                            min(limit, self.ring.size))
