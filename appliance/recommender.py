"""Feeds: filters, orderings and pages over an in-memory snapshot of the catalog.

The recommender holds no I/O of its own: it is handed callables that load the catalog and popularity,
and caches what they return (catalog until invalidated, popularity for a configured number of seconds).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from appliance.errors import InvalidInput
from appliance.types import Product, Scored

SORTS = ("price_asc", "price_desc")


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
    def __init__(
        self,
        load_catalog: Callable[[], Sequence[Product]],
        load_popularity: Callable[[datetime], tuple[np.ndarray, np.ndarray]],
        clock: Callable[[], datetime],
        popularity_ttl_seconds: float,
    ) -> None:
        self._load_catalog = load_catalog
        self._load_popularity = load_popularity
        self._clock = clock
        self._ttl = popularity_ttl_seconds
        self._lock = threading.Lock()
        self._view: CatalogView | None = None
        self._popular: tuple[float, np.ndarray, np.ndarray] | None = None  # (loaded at, order, scores)

    def invalidate(self, popularity: bool = False) -> None:
        """Forget the catalog snapshot (after a catalog change) and, when asked, popularity too."""
        with self._lock:
            self._view = None
            if popularity:
                self._popular = None

    def view(self) -> CatalogView:
        with self._lock:
            if self._view is None:
                self._view = CatalogView(self._load_catalog())
                self._popular = None
            return self._view

    def _popularity(self, view: CatalogView) -> tuple[np.ndarray, np.ndarray]:
        """Rows in the default order (popularity desc, newest first, then id) and each row's popularity."""
        with self._lock:
            cached = self._popular
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1], cached[2]
        ids, scores = self._load_popularity(self._clock())
        popularity = np.zeros(len(view), dtype=np.float64)
        rows = np.array([view.row.get(int(i), -1) for i in ids], dtype=np.int64)
        known = rows >= 0
        popularity[rows[known]] = scores[known]
        order = np.lexsort((view.ids, -view.created, -popularity))
        with self._lock:
            if self._view is view:
                self._popular = (time.monotonic(), order, popularity)
        return order, popularity

    def feed(self, query: FeedQuery) -> FeedPage:
        view = self.view()
        keep = view.mask(query)
        if query.sort is None:
            order, popularity = self._popularity(view)
            ordering, scores, source = "popular", popularity, "popular"
        else:
            price = np.where(np.isnan(view.price), np.inf, view.price)  # unpriced products go last
            key = price if query.sort == "price_asc" else -np.where(np.isinf(price), -np.inf, price)
            order = np.lexsort((view.ids, key))
            ordering, scores, source = query.sort, np.nan_to_num(view.price), "price"
        order = order[keep[order]]
        start = (query.page - 1) * query.per_page
        rows = order[start:start + query.per_page]
        items = [Scored(int(view.ids[r]), float(scores[r]), source) for r in rows]
        products = {s.product_id: view.products[s.product_id] for s in items}
        return FeedPage(items, query.page, query.per_page, len(order), ordering, products)
