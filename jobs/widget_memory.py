"""What the widgets keep in memory between requests, and what one call reads once.

A call (one widget, or a whole page of them in POST /recommendations) takes one `Moment`: the catalog view, the
widgets' tables, the rules and the popularity as they are when it starts, and each shopper's purchases once.
Finished answers that do not depend on the shopper, and every request's candidates (before the pipeline, which
runs per shopper), are kept per (request, `Moment.stamp`): the stamp names the inputs that change as a whole
(tables build, active rules, vector index version), so a changed one is a different key and the old entries age
out of the LRU. The catalog is patched product by product (10 edits/s) and the popularity is a new array every
few seconds, but most answers read neither all of the catalog nor the popularity: an entry is `Kept` with the
catalog version it was computed at and what it read (its candidates' products, the members of some categories,
the popularity if any); it holds while no patch since touched those (`CatalogView.changed_since`). With
`blocking=False` (the event loop's fast path) anything that would read DuckDB, query the vector index or compute
for long raises `WouldBlock` instead; the caller then runs the same call in a worker thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.recommender import Recommender
from appliance.rules import Rule
from appliance.widgets import Widgets, WidgetTables
from storage.events import EventStore
from storage.rules import RuleStore
from storage.vectors import VectorIndex


class WouldBlock(Exception):  # noqa: N818 (a signal, not an error)
    """The answer needs a DuckDB read, an index query or a table build: not on the event loop."""


class Lru:
    """A bounded map, least recently used out first; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class Kept:
    """A cached value, the catalog version it was computed at and what it read: these products of the catalog
    (None: all of it), the members of these categories (lower case), this popularity (None: none)."""

    value: Any
    version: int
    products: frozenset[int] | None
    categories: frozenset[str] = frozenset()
    popularity: np.ndarray | None = None  # refreshed every feed.popularity_refresh_seconds: a new array

    def valid_at(self, m: Moment) -> bool:
        """Whether nothing this value read changed by the moment `m`: the popularity is the same, and no patch of
        the catalog since `version` touched its products or categories."""
        if self.popularity is not None and self.popularity is not m.popularity:
            return False
        if self.version == m.view.version:
            return True
        changed = None if self.products is None else m.view.changed_since(self.version)
        return changed is not None and self.products.isdisjoint(changed[0]) and self.categories.isdisjoint(changed[1])


@dataclass
class Memo:
    """The widgets' caches: finished answers, requests' candidates, products' nearest neighbours by vector,
    bought-together fallbacks."""

    size: int
    answers: Lru = field(init=False)  # (request, stamp) -> Kept(finished picks)
    sources: Lru = field(init=False)  # (request, stamp) -> Kept(candidates before the pipeline)
    nearest: Lru = field(init=False)  # anchor -> (index version, ids, cosines)
    complements: Lru = field(init=False)  # (top category or None, stamp) -> Kept((its rows by popularity, peak))

    def __post_init__(self) -> None:
        self.answers, self.sources, self.nearest = Lru(self.size), Lru(self.size), Lru(self.size)
        self.complements = Lru(1024)

    @staticmethod
    def fresh(lru: Lru, key: Hashable, m: Moment) -> Kept | None:
        """What is kept under `key` if it still holds for the moment's catalog; one that holds is re-kept at the
        moment's version, so the next check looks back over fewer patches."""
        kept: Kept | None = lru.get(key)
        if kept is None or not kept.valid_at(m):
            return None
        if kept.version < m.version:
            kept = replace(kept, version=m.version)
            lru.put(key, kept)
        return kept


@dataclass(frozen=True)
class Moment:
    """The shared inputs of one call, read once."""

    view: CatalogView
    tables: WidgetTables
    rules: tuple[Rule, ...]  # every rule; the pipeline applies those active at `now`
    now: datetime
    popularity: np.ndarray  # (n,) per view row
    stamp: tuple  # names the tables, the active rules and the vector index: part of every cached key
    version: int  # the catalog's version when the call started (what a `Kept` entry is checked from)


class Call:
    """One HTTP call's reads, shared by its widget requests (one catalog snapshot, one rules list, one look-up of
    each shopper's purchases). `blocking` False: raise `WouldBlock` rather than read DuckDB or the index."""

    def __init__(self, recommender: Recommender, widgets: Widgets, rules: RuleStore, events: EventStore,
                 index: VectorIndex, clock: Callable[[], datetime], blocking: bool) -> None:
        self.recommender, self.widgets, self.rules, self.events, self.index = recommender, widgets, rules, events, index
        self.clock = clock
        self.blocking = blocking
        self._moment: Moment | None = None
        self._purchased: dict[int, frozenset[int]] = {}

    def need(self, in_memory: bool) -> None:
        """Go on only if the next step is in memory, or blocking is allowed."""
        if not in_memory and not self.blocking:
            raise WouldBlock

    def moment(self) -> Moment:
        if self._moment is None:
            self.need(self.recommender.warm() and self.widgets.ready() and self.rules.loaded())
            view = self.recommender.view()
            version = view.version  # before anything is read from it: a patch landing meanwhile is checked later
            tables, rules, now = self.widgets.tables(), self.rules.all(), self.clock()
            _, popularity = self.recommender.popularity_of(view)
            active = tuple(r for r in rules if r.active(now))
            stamp = (self.widgets.generation, active, self.index.version)
            self._moment = Moment(view, tables, rules, now, popularity, stamp, version)
        return self._moment

    def purchased(self, customer_id: int | None) -> frozenset[int]:
        if customer_id is None:
            return frozenset()
        found = self._purchased.get(customer_id)
        if found is None:
            found = self.events.purchased_cached(customer_id)
            if found is None:
                self.need(False)
                found = self.events.purchased(customer_id)
            self._purchased[customer_id] = found
        return found
