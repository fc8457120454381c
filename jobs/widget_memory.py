"""What the widgets keep in memory between requests, and what one call reads once.

A call (one widget, or a whole page of them in POST /recommendations) takes one `Moment`: the catalog view, the
widgets' tables, the rules and the popularity as they are when it starts, and each shopper's purchases once.
Finished answers that do not depend on the shopper are kept per (request, `Moment.stamp`): the stamp names every
input (tables build, catalog version, active rules, popularity, vector index version), so a changed input is a
different key and the old answers age out of the LRU. With `blocking=False` (the event loop's fast path) anything
that would read DuckDB, query the vector index or compute for long raises `WouldBlock` instead; the caller then
runs the same call in a worker thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
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


@dataclass
class Memo:
    """The widgets' caches: finished answers, products' nearest neighbours by vector, bought-together fallbacks."""

    size: int
    answers: Lru = field(init=False)
    nearest: Lru = field(init=False)  # anchor -> (index version, ids, cosines)
    complements: Lru = field(init=False)  # (top category or None, stamp) -> its rows by popularity

    def __post_init__(self) -> None:
        self.answers, self.nearest, self.complements = Lru(self.size), Lru(self.size), Lru(1024)


@dataclass(frozen=True)
class Moment:
    """The shared inputs of one call, read once."""

    view: CatalogView
    tables: WidgetTables
    rules: tuple[Rule, ...]  # every rule; the pipeline applies those active at `now`
    now: datetime
    popularity: np.ndarray  # (n,) per view row
    stamp: tuple  # names the inputs above (and the vector index): part of every cached answer's key


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
            view, tables, rules, now = self.recommender.view(), self.widgets.tables(), self.rules.all(), self.clock()
            _, popularity = self.recommender.popularity_of(view)
            active = tuple(r for r in rules if r.active(now))
            stamp = (self.widgets.generation, view.version, active, id(popularity), self.index.version)
            self._moment = Moment(view, tables, rules, now, popularity, stamp)
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
