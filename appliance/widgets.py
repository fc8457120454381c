"""The storefront's widgets as candidate sources: bought together, related, looking similar, trending,
recently viewed. Each turns precomputed tables (or the caller's lookups) into `Pick`s on the 0..1 scale; the
pipeline (appliance/pipeline.py) filters and orders them. No I/O here: the tables are built in jobs/."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.cooccurrence import CategoryTrend, Neighbours, Trend
from appliance.pipeline import members
from appliance.rules import Rule
from appliance.threads import Threads
from appliance.types import Pick

DAY = 86400.0


@dataclass(frozen=True)
class WidgetTables:
    """Everything the widgets aggregate from events, built together by the `widgets` job."""

    bought: Neighbours  # co-occurrence in cart/purchase baskets
    viewed: Neighbours  # co-occurrence in view/click baskets
    trend: Trend
    built_at: datetime
    categories: CategoryTrend  # rising categories, the same measure as products
    trending: tuple[Pick, ...] = ()  # the trend as picks, best first (built with the tables, not per request)
    trending_in: Mapping[str, tuple[Pick, ...]] | None = None  # the same per category name (any level, lower case)


class Widgets:
    """The tables in memory for the hot path: built on first use, then rebuilt by `refresh` (the job, or one
    background thread once they are older than `max_age_seconds`) while the previous ones keep serving;
    `generation` counts the builds (answers cached from older tables are not used)."""

    def __init__(self, build: Callable[[], WidgetTables], max_age_seconds: float) -> None:
        self._build = build
        self._max_age = max_age_seconds
        self._lock = threading.Lock()
        self._building = threading.Lock()  # one build at a time
        self._tables: tuple[float, WidgetTables] | None = None
        self.generation = 0
        self._threads = Threads("widgets")  # the background rebuilds

    def ready(self) -> bool:
        return self._tables is not None

    def tables(self) -> WidgetTables:
        cached = self._tables
        if cached is None:
            return self.refresh()
        if time.monotonic() - cached[0] > self._max_age and not self._building.locked():
            self._threads.start(self.refresh, "widget-tables")
        return cached[1]

    def close(self, timeout: float = 10.0) -> None:
        """Start no more background rebuilds; wait up to `timeout` s for one in progress."""
        self._threads.close(timeout)

    def refresh(self) -> WidgetTables:
        """Build the tables now; a caller that waited for a build in progress takes that one."""
        started = self.generation
        with self._building:
            if self.generation != started and self._tables is not None:
                return self._tables[1]
            tables = self._build()
            with self._lock:
                self._tables = (time.monotonic(), tables)
                self.generation += 1
        return tables


def _name(view: CatalogView, product_id: int) -> str:
    product = view.products.get(product_id)
    return product.name if product else str(product_id)


def _leaf(view: CatalogView, product_id: int) -> str:
    path = view.products[product_id].category_path
    return path[-1] if path else "the shop"


def ranked(view: CatalogView, popularity: np.ndarray, name: str | None) -> np.ndarray:
    """The rows under this category (None: the whole shop) with any popularity, most popular first (ties by id)."""
    rows = np.arange(len(view)) if name is None else view.by_category.get(name.strip().lower(), np.zeros(0, np.int64))
    rows = rows[rows < len(popularity)]
    rows = rows[popularity[rows] > 0]
    return rows[np.lexsort((view.ids[rows], -popularity[rows]))]


def peak(popularity: np.ndarray) -> float:
    """The shop's highest popularity (1 when none has any): what the fallback's scores are relative to."""
    top = float(popularity.max()) if len(popularity) else 0.0
    return top if top > 0 else 1.0


def popular(view: CatalogView, popularity: np.ndarray, rows: np.ndarray, where: str, limit: int,
            top: float | None = None) -> list[Pick]:
    """The fallback: the first `limit` of these rows (`ranked`), scored relative to the shop's most popular
    product (`top`: `peak(popularity)`, passed when known)."""
    rows = rows[:limit]
    scores = (popularity[rows] / (peak(popularity) if top is None else top)).tolist()
    reason = f"popular in {where}"
    return [Pick(p, s, "popular", reason, {"popularity": s})
            for p, s in zip(view.ids_all[rows].tolist(), scores, strict=True)]


def bought_together(tables: WidgetTables, view: CatalogView, product_ids: Sequence[int]) -> list[Pick]:
    """Products carted or bought in the same sessions as these (empty when none are known: see `complements`)."""
    ids, scores, anchors = tables.bought.of(product_ids)
    return [Pick(int(p), float(s), "bought_together", f"bought with {_name(view, int(a))}",
                 {"co_purchase": float(s)}) for p, s, a in zip(ids, scores, anchors, strict=True)]


def complement_of(view: CatalogView, product_ids: Sequence[int]) -> tuple[str, frozenset[str]] | None:
    """Where the fallback of bought-together looks: the first known product's top category without the
    products' own subcategories (complements, not substitutes); None: the whole shop."""
    known = [view.products[p] for p in product_ids if p in view.products and view.products[p].category_path]
    if not known:
        return None
    return known[0].category_path[0], frozenset(p.category_path[-1] for p in known)


def complements(view: CatalogView, popularity: np.ndarray, where: tuple[str, frozenset[str]] | None,
                rows: np.ndarray, limit: int, top: float | None = None) -> list[Pick]:
    """The fallback when no co-purchase is known: the most popular products of `complement_of`'s place, from
    `rows` = `ranked` of its top category (or of the whole shop), without the products' own subcategories."""
    if where is None:
        return popular(view, popularity, rows, "the shop", limit, top)
    parent, leaves = where
    none = np.zeros(0, np.int64)
    own = [view.by_category.get(leaf.strip().lower(), none) for leaf in leaves]
    found, pos, chunk = [], 0, 4 * limit
    while pos < len(rows) and sum(len(f) for f in found) < limit:
        part = rows[pos:pos + chunk]
        for leaf_rows in own:  # posting lists are sorted: a binary search each, not np.isin's sort of both
            part = part[~members(leaf_rows, part)]
        found.append(part)
        pos, chunk = pos + chunk, chunk * 2
    return popular(view, popularity, np.concatenate(found) if found else none, parent, limit, top)


def looking_similar(view: CatalogView, anchor: int, ids: np.ndarray, cosines: np.ndarray) -> list[Pick]:
    """Nearest products by vector (content only): score (cosine + 1) / 2."""
    name = _name(view, anchor)
    return [Pick(int(p), float((c + 1.0) / 2.0), "similar", f"looks like {name}", {"similarity": float((c + 1) / 2)})
            for p, c in zip(ids, cosines, strict=True) if int(p) != anchor]


def related(tables: WidgetTables, view: CatalogView, anchor: int, ids: np.ndarray, cosines: np.ndarray,
            behaviour_weight: float) -> list[Pick]:
    """Content similarity blended with co-view behaviour: (1 - w) * (cosine + 1) / 2 + w * co-view (Ochiai),
    over the nearest products and the co-viewed ones; the reason says when shoppers' views lifted it."""
    content = dict(zip(ids.tolist(), ((cosines + 1.0) / 2.0).tolist(), strict=True))
    co_ids, co_scores, _ = tables.viewed.of([anchor])
    behaviour = dict(zip(co_ids.tolist(), co_scores.tolist(), strict=True))
    name = _name(view, anchor)
    picks = []
    for pid in set(content) | set(behaviour):
        if pid == anchor:
            continue
        sim, co = content.get(pid, 0.0), behaviour.get(pid, 0.0)
        score = (1.0 - behaviour_weight) * sim + behaviour_weight * co
        reason = f"viewed with {name}" if co > 0 else f"like {name}"
        picks.append(Pick(pid, score, "related", reason, {"similarity": sim, "co_view": co}))
    return sorted(picks, key=lambda p: (-p.score, p.product_id))


def trend_picks(trend: Trend, view: CatalogView) -> tuple[tuple[Pick, ...], dict[str, tuple[Pick, ...]]]:
    """The products rising against their own baseline as picks, best first, overall and per category name
    (every level of the path, lower case): built once with the tables."""
    picks = tuple(Pick(int(p), float(s), "trending", f"trending in {_leaf(view, int(p))}", {"trend_z": float(z)})
                  for p, z, s in zip(trend.product_ids, trend.z, trend.scores, strict=True)
                  if int(p) in view.products)
    by_name: dict[str, list[Pick]] = {}
    for pick in picks:
        for name in {c.strip().lower() for c in view.products[pick.product_id].category_path}:
            by_name.setdefault(name, []).append(pick)
    return picks, {name: tuple(found) for name, found in by_name.items()}


def trending(tables: WidgetTables, categories: Sequence[str]) -> list[Pick]:
    """The trending picks, or those under any of these categories ("trending in X"), best first; the pipeline
    still applies every filter (a product moved to another category since the tables were built)."""
    if not categories:
        return list(tables.trending)
    lists = [(tables.trending_in or {}).get(c.strip().lower(), ()) for c in categories]
    return list(lists[0]) if len(lists) == 1 else list(heapq.merge(*lists, key=lambda p: -p.score))


@dataclass(frozen=True)
class CategoryPick:
    path: tuple[str, ...]  # the category and its parents, top first
    score: float  # the trend on the 0..1 scale, as trending products
    z: float
    shoppers: float  # distinct shoppers in the recent window
    expected: float  # what the category's own baseline predicts


def rising_categories(trend: CategoryTrend, rules: Sequence[Rule], within: str | None, k: int) -> list[CategoryPick]:
    """The `k` strongest rising categories, those hidden by a category rule (hide, category only) left out;
    `within`: only categories strictly under this one."""
    hidden = {r.category.strip().lower() for r in rules if r.kind == "hide" and r.category is not None
              and r.product_id is None and r.brand is None and r.min_price is None and r.max_price is None}
    under = within.strip().lower() if within else None
    out = []
    for i, path in enumerate(trend.paths):
        names = [c.strip().lower() for c in path]
        if hidden.intersection(names) or (under is not None and under not in names[:-1]):
            continue
        out.append(CategoryPick(path, float(trend.scores[i]), float(trend.z[i]), float(trend.shoppers[i]),
                                float(trend.expected[i])))
        if len(out) == k:
            break
    return out


def recently_viewed(viewed: Sequence[tuple[int, float]], now: float) -> list[Pick]:
    """The shopper's own recent products (id, epoch seconds), newest first: score 2^(-age in days)."""
    picks = []
    for pid, at in viewed:
        recency = float(2.0 ** (-max(0.0, now - at) / DAY))
        picks.append(Pick(pid, recency, "recently_viewed", "you viewed this", {"recency": recency}))
    return picks
