"""Feeds: filters, orderings and pages over an in-memory snapshot of the catalog.

The recommender holds no I/O of its own: it is handed callables that load the catalog and popularity,
and caches what they return (catalog until invalidated, popularity for a configured number of seconds).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from appliance.errors import InvalidInput
from appliance.ranking import Source, by_prior, interleave
from appliance.types import Product, Scored

SORTS = ("price_asc", "price_desc")
# (vector, k) -> (product ids, cosine similarities), best first
Nearest = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Personal:
    """What the feed knows about one shopper."""

    vector: np.ndarray | None  # (D,) unit vector in the product space, None: not personalised
    purchased: frozenset[int] = frozenset()  # left out when the feed is configured to exclude them
    popularity_weight: float = 0.0  # the serving tower's prior: nearest products rank by cosine + this * log(1 + pop)


@dataclass(frozen=True)
class FeedSettings:
    personal_share: float  # part of the feed filled by nearest products
    new_share: float  # part filled by new arrivals
    new_arrival_days: float
    personal_depth: int  # nearest products fetched per feed
    exclude_purchased: bool
    snapshot_seconds: float  # how long a feed_id keeps its order
    snapshot_max: int  # feed_ids kept at once (oldest dropped first)


@dataclass(frozen=True)
class _Snapshot:
    """Everything a feed order is computed from, so later pages are computed from the same inputs."""

    view: CatalogView
    popular_order: np.ndarray
    popularity: np.ndarray
    new_rows: np.ndarray
    personal_rows: np.ndarray
    personal_scores: np.ndarray
    purchased: frozenset[int]
    created: float


@dataclass(frozen=True)
class FeedQuery:
    page: int = 1
    per_page: int = 20
    sort: str | None = None  # None: the default order; price_asc / price_desc override it
    categories: tuple[str, ...] = ()  # any level of the category path, case-insensitive; any of them matches
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    exclude: frozenset[int] = field(default_factory=frozenset)
    min_score: float | None = None  # personal items below this similarity score (cosine + 1) are left out
    feed_id: str | None = None  # continue the feed whose page 1 returned this id (same order, no duplicates)

    def __post_init__(self) -> None:
        if self.page < 1:
            raise InvalidInput("page must be 1 or more", field="page")
        if self.per_page < 1:
            raise InvalidInput("per_page must be 1 or more", field="per_page")
        if self.sort is not None and self.sort not in SORTS:
            raise InvalidInput(f"sort must be one of {', '.join(SORTS)}", field="sort")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise InvalidInput("min_price must not exceed max_price", field="min_price")


@dataclass(frozen=True)
class FeedPage:
    items: list[Scored]
    page: int
    per_page: int
    total: int  # items matching the filters, over all pages
    ordering: str  # popular / price_asc / price_desc
    products: dict[int, Product]  # the products of `items`, from the same catalog snapshot
    feed_id: str  # pass it back for the next pages
    personalized: bool

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.per_page)


class CatalogView:
    """Column arrays of the catalog (row i = one product) and an inverted index of category names."""

    def __init__(self, products: Sequence[Product]) -> None:
        self.products = {p.product_id: p for p in products}
        self.ids = np.fromiter((p.product_id for p in products), np.int64, len(products))
        self.price = np.array([np.nan if p.price is None else p.price for p in products], dtype=np.float64)
        self.created = np.array([p.created_at.timestamp() if p.created_at else 0.0 for p in products])
        self.in_stock = np.array([p.in_stock for p in products], dtype=bool)
        self.row = {pid: i for i, pid in enumerate(self.ids.tolist())}
        rows_by_category: dict[str, list[int]] = {}
        for i, p in enumerate(products):
            for name in {c.strip().lower() for c in p.category_path}:
                rows_by_category.setdefault(name, []).append(i)
        self.by_category = {k: np.asarray(v, dtype=np.int64) for k, v in rows_by_category.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, query: FeedQuery) -> np.ndarray:
        keep = np.ones(len(self.ids), dtype=bool)
        if query.categories:
            keep[:] = False
            for name in query.categories:
                keep[self.by_category.get(name.strip().lower(), np.zeros(0, np.int64))] = True
        with np.errstate(invalid="ignore"):
            if query.min_price is not None:
                keep &= self.price >= query.min_price
            if query.max_price is not None:
                keep &= self.price <= query.max_price
        if query.in_stock is not None:
            keep &= self.in_stock == query.in_stock
        for pid in query.exclude:
            row = self.row.get(pid)
            if row is not None:
                keep[row] = False
        return keep


class Recommender:
    """Feeds from candidate sources (personal nearest products, popular, new arrivals) merged into one order."""

    def __init__(
        self,
        load_catalog: Callable[[], Sequence[Product]],
        load_popularity: Callable[[datetime], tuple[np.ndarray, np.ndarray]],
        nearest: Nearest,
        clock: Callable[[], datetime],
        popularity_ttl_seconds: float,
        settings: FeedSettings,
    ) -> None:
        self._load_catalog = load_catalog
        self._load_popularity = load_popularity
        self._nearest = nearest
        self._clock = clock
        self._ttl = popularity_ttl_seconds
        self.settings = settings
        self._lock = threading.Lock()
        self._view: CatalogView | None = None
        self._popular: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None  # (at, order, scores, new)
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()

    def invalidate(self, popularity: bool = False) -> None:
        """Forget the catalog snapshot (after a catalog change) and, when asked, popularity too."""
        with self._lock:
            self._view = None
            if popularity:
                self._popular = None

    def refresh_popularity(self) -> int:
        """Recompute popularity now (the scheduled job); how many products have any."""
        with self._lock:
            self._popular = None
        _, popularity = self.popularity_of(self.view())
        return int(np.count_nonzero(popularity))

    def view(self) -> CatalogView:
        with self._lock:
            if self._view is None:
                self._view = CatalogView(self._load_catalog())
                self._popular = None
            return self._view

    def popularity_of(self, view: CatalogView) -> tuple[np.ndarray, np.ndarray]:
        """Rows in the default order (popularity desc, newest first, then id) and each row's popularity."""
        order, popularity, _ = self._ranked(view)
        return order, popularity

    def _ranked(self, view: CatalogView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The default order, popularity, and the new arrivals (newest first): recomputed every TTL seconds."""
        with self._lock:
            cached = self._popular
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1:]
        now = self._clock()
        ids, scores = self._load_popularity(now)
        popularity = np.zeros(len(view), dtype=np.float64)
        rows = np.array([view.row.get(int(i), -1) for i in ids], dtype=np.int64)
        known = rows >= 0
        popularity[rows[known]] = scores[known]
        order = np.lexsort((view.ids, -view.created, -popularity))
        new_rows = np.flatnonzero(view.created >= now.timestamp() - self.settings.new_arrival_days * 86400.0)
        new_rows = new_rows[np.lexsort((view.ids[new_rows], -view.created[new_rows]))]
        with self._lock:
            if self._view is view:
                self._popular = (time.monotonic(), order, popularity, new_rows)
        return order, popularity, new_rows

    def _snapshot(self, query: FeedQuery, personal: Personal | None) -> tuple[str, _Snapshot]:
        now = time.monotonic()
        with self._lock:
            expired = [k for k, snap in self._snapshots.items() if now - snap.created > self.settings.snapshot_seconds]
            for key in expired:
                del self._snapshots[key]
            if query.feed_id and query.feed_id in self._snapshots:
                self._snapshots.move_to_end(query.feed_id)
                return query.feed_id, self._snapshots[query.feed_id]
        view = self.view()
        order, popularity, new_rows = self._ranked(view)
        personal_rows, personal_scores = np.zeros(0, np.int64), np.zeros(0)
        purchased = personal.purchased if personal is not None and self.settings.exclude_purchased else frozenset()
        if personal is not None and personal.vector is not None and query.sort is None:
            ids, sims = self._nearest(personal.vector, self.settings.personal_depth)
            rows = np.array([view.row.get(int(i), -1) for i in ids], dtype=np.int64)
            rows, sims = rows[rows >= 0], sims[rows >= 0].astype(np.float64)
            ranked = by_prior(rows, sims, popularity, personal.popularity_weight)
            personal_rows, personal_scores = rows[ranked], sims[ranked] + 1.0  # the score shown: cosine + 1
        snap = _Snapshot(view, order, popularity, new_rows, personal_rows, personal_scores, purchased, now)
        feed_id = secrets.token_urlsafe(9)
        with self._lock:
            self._snapshots[feed_id] = snap
            while len(self._snapshots) > self.settings.snapshot_max:
                self._snapshots.popitem(last=False)
        return feed_id, snap

    def feed(self, query: FeedQuery, personal: Personal | None = None) -> FeedPage:
        feed_id, snap = self._snapshot(query, personal)
        view = snap.view
        keep = view.mask(query)
        for pid in snap.purchased:
            if (row := view.row.get(pid)) is not None:
                keep[row] = False
        start, end = (query.page - 1) * query.per_page, query.page * query.per_page
        personalized = query.sort is None and len(snap.personal_rows) > 0
        if query.sort is not None:
            price = np.where(np.isnan(view.price), np.inf, view.price)  # unpriced products go last
            key = price if query.sort == "price_asc" else -np.where(np.isinf(price), -np.inf, price)
            order = np.lexsort((view.ids, key))
            order = order[keep[order]]
            rows, scores, names = order[start:end], np.nan_to_num(view.price)[order[start:end]], ["price"] * len(order)
            total, ordering = len(order), query.sort
        elif not personalized:
            order = snap.popular_order[keep[snap.popular_order]]
            rows, scores, names = order[start:end], snap.popularity[order[start:end]], ["popular"] * len(order)
            total, ordering = len(order), "popular"
        else:
            rows, scores, names, total = self._personal_page(snap, query, keep, start, end)
            ordering = "personal"
        items = [Scored(int(view.ids[r]), float(sc), n) for r, sc, n in zip(rows, scores, names, strict=False)]
        products = {s.product_id: view.products[s.product_id] for s in items}
        return FeedPage(items, query.page, query.per_page, total, ordering, products, feed_id, personalized)

    def _personal_page(
        self, snap: _Snapshot, query: FeedQuery, keep: np.ndarray, start: int, end: int
    ) -> tuple[np.ndarray, np.ndarray, list[str], int]:
        personal_keep = keep[snap.personal_rows]
        if query.min_score is not None:
            personal_keep &= snap.personal_scores >= query.min_score
        settings = self.settings
        popular_share = max(0.0, 1.0 - settings.personal_share - settings.new_share)
        sources = [
            Source("personal", snap.personal_rows[personal_keep], snap.personal_scores[personal_keep],
                   settings.personal_share),
            Source("new", snap.new_rows, snap.popularity[snap.new_rows], settings.new_share),
            Source("popular", snap.popular_order, snap.popularity[snap.popular_order], popular_share or 1e-9),
        ]
        rows, scores, names = interleave(sources, keep, end)
        return rows[start:end], scores[start:end], names[start:end], int(keep.sum())
