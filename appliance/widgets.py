"""The storefront's widgets as candidate sources: bought together, related, looking similar, trending,
recently viewed. Each turns precomputed tables (or the caller's lookups) into `Pick`s on the 0..1 scale; the
pipeline (appliance/pipeline.py) filters and orders them. No I/O here: the tables are built in jobs/."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.cooccurrence import Neighbours, Trend
from appliance.types import Pick

DAY = 86400.0


@dataclass(frozen=True)
class WidgetTables:
    """Everything the widgets aggregate from events, built together by the `widgets` job."""

    bought: Neighbours  # co-occurrence in cart/purchase baskets
    viewed: Neighbours  # co-occurrence in view/click baskets
    trend: Trend
    built_at: datetime


class Widgets:
    """The tables in memory for the hot path: built on first use, replaced whole by `refresh` (the job)."""

    def __init__(self, build: Callable[[], WidgetTables], max_age_seconds: float) -> None:
        self._build = build
        self._max_age = max_age_seconds
        self._lock = threading.Lock()
        self._tables: tuple[float, WidgetTables] | None = None

    def tables(self) -> WidgetTables:
        with self._lock:
            cached = self._tables
        if cached is None or time.monotonic() - cached[0] > self._max_age:
            return self.refresh()
        return cached[1]

    def refresh(self) -> WidgetTables:
        tables = self._build()
        with self._lock:
            self._tables = (time.monotonic(), tables)
        return tables


def _name(view: CatalogView, product_id: int) -> str:
    product = view.products.get(product_id)
    return product.name if product else str(product_id)


def _leaf(view: CatalogView, product_id: int) -> str:
    path = view.products[product_id].category_path
    return path[-1] if path else "the shop"


def popular(view: CatalogView, popularity: np.ndarray, rows: np.ndarray, where: str, limit: int) -> list[Pick]:
    """The fallback: the `limit` most popular of these rows, scored relative to the shop's most popular product."""
    top = float(popularity.max()) if len(popularity) and popularity.max() > 0 else 1.0
    rows = rows[popularity[rows] > 0]
    if len(rows) > limit:
        rows = rows[np.argpartition(-popularity[rows], limit - 1)[:limit]]
    rows = rows[np.lexsort((view.ids[rows], -popularity[rows]))]
    return [Pick(int(view.ids[r]), float(popularity[r] / top), "popular", f"popular in {where}",
                 {"popularity": float(popularity[r] / top)}) for r in rows]


def bought_together(tables: WidgetTables, view: CatalogView, product_ids: Sequence[int],
                    popularity: np.ndarray, limit: int) -> list[Pick]:
    """Products carted or bought in the same sessions as these; when none are known, popular products of
    the same top category but another subcategory (complements, not substitutes)."""
    ids, scores, anchors = tables.bought.of(product_ids)
    picks = [Pick(int(p), float(s), "bought_together", f"bought with {_name(view, int(a))}",
                  {"co_purchase": float(s)}) for p, s, a in zip(ids, scores, anchors, strict=True)]
    if picks:
        return picks
    known = [view.products[p] for p in product_ids if p in view.products and view.products[p].category_path]
    if not known:
        return popular(view, popularity, np.arange(len(view)), "the shop", limit)
    parent = known[0].category_path[0]
    none = np.zeros(0, np.int64)
    rows = view.by_category.get(parent.strip().lower(), none)
    for leaf in {p.category_path[-1] for p in known}:
        rows = np.setdiff1d(rows, view.by_category.get(leaf.strip().lower(), none))
    return popular(view, popularity, rows, parent, limit)


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


def trending(tables: WidgetTables, view: CatalogView) -> list[Pick]:
    """Products rising against their own baseline (the pipeline's category filter gives "trending in X")."""
    trend = tables.trend
    return [Pick(int(p), float(s), "trending", f"trending in {_leaf(view, int(p))}", {"trend_z": float(z)})
            for p, z, s in zip(trend.product_ids, trend.z, trend.scores, strict=True) if int(p) in view.products]


def recently_viewed(viewed: Sequence[tuple[int, datetime]], now: datetime) -> list[Pick]:
    """The shopper's own recent products, newest first: score 2^(-age in days)."""
    return [Pick(pid, float(2.0 ** (-max(0.0, (now - at).total_seconds()) / DAY)), "recently_viewed",
                 "you viewed this", {"recency": float(2.0 ** (-max(0.0, (now - at).total_seconds()) / DAY))})
            for pid, at in viewed]
