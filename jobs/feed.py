"""The feed use case: who the shopper is (purchases, vector inside the serving window, the tower's prior),
then the recommender's page. `from_memory` answers a page that needs no DuckDB read and no index lookup (the web
layer then answers it on the event loop, without a thread hop)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import msgspec

from appliance.pipeline import FeedPage, FeedQuery
from appliance.recommender import Personal, Recommender
from appliance.types import NO_IDS, Event
from jobs.feed_pages import FeedPages, PageKey
from jobs.realtime import ServingModel
from storage.events import EventStore
from storage.users import UserStore, UserVector

_UNKNOWN = object()  # not answerable from memory alone


class Histories:
    """The products of shoppers' serving histories, newest first (one read for them all). Refers to the event
    store and the clock only, never to the feeds or the recommender: a snapshot may keep it (through `Recent`)."""

    def __init__(self, events: EventStore, window: timedelta | None, clock: Callable[[], datetime],
                 length: int) -> None:
        self.events, self.window, self.clock, self.length = events, window, clock, length

    def __call__(self, customer_ids: Sequence[int]) -> dict[int, list[int]]:
        since = None if self.window is None else self.clock() - self.window
        found = self.events.histories(customer_ids, since, self.length)
        return {cid: [e.product_id for e in reversed(events)] for cid, events in found.items()}


class Recent(msgspec.Struct, frozen=True, gc=False):
    """One shopper's history, read when called (a `Personal`'s `history`: only on a nearest-products cache miss).
    Untracked by the cyclic collector, like the `Personal` holding it; it holds no cycle (`Histories` never refers
    back to a snapshot). Replaces a closure, which the collector tracked as a function, its cells and a tuple."""

    histories: Histories
    customer_id: int

    def __call__(self) -> list[int]:
        return self.histories([self.customer_id])[self.customer_id]


class Feeds:
    def __init__(
        self, users: UserStore, events: EventStore, serving: ServingModel, recommender: Recommender,
        window_hours: float, clock: Callable[[], datetime], history_length: int = 20, page_cache: int = 0,
        prepare_window_seconds: float = 0.0, monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = users
        self.events = events
        self.serving = serving
        self.recommender = recommender
        self.window = timedelta(hours=window_hours) if window_hours > 0 else None  # None: no serving window
        self.clock = clock
        self.history_length = history_length  # the recent products a personal item's reason may name
        self._histories = Histories(events, self.window, clock, history_length)
        self.pages = FeedPages(page_cache)
        self.prepare_window = prepare_window_seconds  # 0: the consumer prepares every changed shopper
        self._monotonic = monotonic
        self._asked: dict[int, float] = {}  # shopper -> when they last asked for a feed with their vector
        self._swept = monotonic()

    def _fresh(self, stored: UserVector | None) -> bool:
        if stored is None:
            return False
        return self.window is None or stored.last_event_at >= self.clock() - self.window

    def _personal(self, customer_id: int, stored: UserVector, purchased: frozenset[int],
                  history: Sequence[int] | None = None) -> Personal:
        """`history`: their recent products when already read; otherwise read only if the recommender needs
        it (its nearest products for this vector are not cached)."""
        model = self.serving.get().model
        weight = 0.0 if model is None else model.popularity_weight.item()
        key = (customer_id, stored.updated_at, stored.model_version)
        recent = (lambda: history) if history is not None else Recent(self._histories, customer_id)
        return Personal(stored.vector, purchased, weight, key, recent)

    def personal(self, customer_id: int | None) -> Personal | None:
        """The shopper's purchases (left out of every feed of theirs) and their vector while their newest
        interaction is inside the serving window (None: a shopper never seen)."""
        if customer_id is None:
            return None
        purchased = self.events.purchased(customer_id)
        stored = self.users.get(customer_id)
        if not self._fresh(stored):
            return Personal(None, purchased)
        self._asked[customer_id] = self._monotonic()
        return self._personal(customer_id, stored, purchased)

    def from_memory(self, customer_id: int | None, query: FeedQuery) -> FeedPage | None:
        """`page` when it can be answered from memory alone (None: it needs a read or a lookup first), with what
        is known of the shopper looked up once."""
        personal = self._remembered(customer_id, query)
        if personal is _UNKNOWN:
            return None
        if customer_id is not None and personal.vector is not None:  # type: ignore[union-attr]
            self._asked[customer_id] = self._monotonic()  # asked, as in `personal`: the consumer keeps preparing
        return self._page(personal, query)  # type: ignore[arg-type]

    def _remembered(self, customer_id: int | None, query: FeedQuery) -> Personal | None | object:
        """What `personal` gives, from memory alone, or _UNKNOWN when that needs a read or a lookup."""
        if not self.recommender.warm():
            return _UNKNOWN
        if customer_id is None:
            return None
        known, stored = self.users.cached(customer_id)
        purchased = self.events.purchased_cached(customer_id)
        if not known or purchased is None:
            return _UNKNOWN
        if not self._fresh(stored):
            return Personal(None, purchased)
        personal = self._personal(customer_id, stored, purchased)  # type: ignore[arg-type]
        return personal if query.sort is not None or self.recommender.knows(personal, query) else _UNKNOWN

    def prepare(self, customer_ids: Sequence[int], asked_only: bool = False,
                histories: Mapping[int, Sequence[Event]] | None = None) -> None:
        """Compute the nearest products of shoppers whose vector just changed (the consumer calls this). With
        `asked_only`, only of those who asked for a feed within `prepare_window` seconds: a shopper who sends
        events but reads no feed costs no lookup (0.25 ms of CPU each, the consumer's largest part); their
        next feed finds no list in memory, so it is answered off the event loop and looks it up on its way.
        `histories`: their serving histories (oldest first) as the consumer just read them for their vectors,
        so they are not read from DuckDB a second time; read here when not given."""
        if asked_only and self.prepare_window > 0:
            now = self._monotonic()
            since = now - self.prepare_window
            customer_ids = [cid for cid in customer_ids if self._asked.get(cid, since - 1) >= since]
            if now - self._swept > self.prepare_window:  # forget shoppers gone longer than the window
                self._swept = now
                self._asked = {cid: at for cid, at in list(self._asked.items()) if at >= since}
        fresh = []
        for cid in customer_ids:
            known, stored = self.users.cached(cid)
            if known and self._fresh(stored):
                fresh.append((cid, stored))
        if histories is None:
            recent = self._histories([cid for cid, _ in fresh]) if fresh else {}
        else:
            recent = {cid: [e.product_id for e in reversed(histories[cid])] for cid, _ in fresh}
        self.recommender.prepare([self._personal(cid, stored, NO_IDS, recent[cid]) for cid, stored in fresh])

    def warm(self, stopping: threading.Event | None = None) -> int:
        """At start-up: the recently active shoppers' vectors into memory and their nearest products computed
        (256 at a time; `stopping` set: no more)."""
        ids = self.users.warm()
        self.events.warm_purchases(ids)
        for i in range(0, len(ids), 256):
            if stopping is not None and stopping.is_set():
                break
            self.prepare(ids[i:i + 256])
        now = self._monotonic()
        self._asked.update(dict.fromkeys(ids, now))  # recently active: treated as having just asked
        return len(ids)

    def page(self, customer_id: int | None, query: FeedQuery) -> FeedPage:
        return self._page(self.personal(customer_id), query)

    def _page(self, personal: Personal | None, query: FeedQuery) -> FeedPage:
        recommender = self.recommender
        if not FeedPages.cacheable(query):
            return recommender.feed(query, personal)
        who = personal or Personal(None)
        key = PageKey(who.key if who.vector is not None else None, who.popularity_weight, who.purchased, query)
        filtered = bool(query.categories) or any(v is not None for v in (query.min_price, query.max_price,
                                                                          query.in_stock))
        return self.pages.page(key, recommender.view(), recommender.reissue,
                               lambda: recommender.feed(query, personal), filtered)
