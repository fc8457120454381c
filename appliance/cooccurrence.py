"""Behavioural neighbours (products in the same baskets) and trending scores: pure functions over counts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

TREND_HALF = 3.0  # a trend z-score of this much shows as score 0.5 (the 0..1 scale: z / (z + TREND_HALF))


class Neighbours:
    """For each product, the products that share its baskets, ranked by the Ochiai coefficient
    together / sqrt(shoppers(a) * shoppers(b)): in 0..1, 1 when two products are only ever carted together,
    and unlike plain co-counts (or confidence) it does not favour products that are in every basket."""

    def __init__(self, table: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        self._table = table  # product_id -> (neighbour ids (n,), scores (n,)), best first

    @classmethod
    def build(cls, pairs: dict[str, np.ndarray], support: dict[str, np.ndarray], min_support: int,
              depth: int) -> Neighbours:
        """From counted pairs ({a, b, together}) and products' shoppers ({product_id, shoppers}); pairs seen by
        fewer than `min_support` distinct shoppers are noise and dropped; `depth` neighbours kept per product."""
        a, b = np.asarray(pairs["a"], np.int64), np.asarray(pairs["b"], np.int64)
        together = np.asarray(pairs["together"], np.float64)
        keep = together >= min_support
        a, b, together = a[keep], b[keep], together[keep]
        shoppers = dict(zip(np.asarray(support["product_id"]).tolist(),
                            np.asarray(support["shoppers"], np.float64).tolist(), strict=True))
        sa = np.array([shoppers.get(x, 1.0) for x in a.tolist()])
        sb = np.array([shoppers.get(x, 1.0) for x in b.tolist()])
        score = np.clip(together / np.sqrt(np.maximum(sa * sb, 1.0)), 0.0, 1.0)
        order = np.lexsort((b, -score, a))  # by product, best first, ties by id
        a, b, score = a[order], b[order], score[order]
        if not len(a):
            return cls({})
        starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
        ends = np.r_[starts[1:], len(a)]
        return cls({int(a[s]): (b[s:min(e, s + depth)], score[s:min(e, s + depth)])
                    for s, e in zip(starts.tolist(), ends.tolist(), strict=True)})

    def __len__(self) -> int:
        return len(self._table)

    def of(self, product_ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Neighbours of one product or a whole cart, best first: (ids, scores, anchor ids). A cart's scores
        combine as a noisy-or, 1 - prod(1 - s), so a product that goes with several cart items ranks higher and
        stays in 0..1; the anchor is the cart item it goes with best. The inputs themselves are left out."""
        given = set(product_ids)
        best: dict[int, tuple[float, int]] = {}
        miss: dict[int, float] = {}
        for anchor in given:
            ids, scores = self._table.get(anchor, (np.zeros(0, np.int64), np.zeros(0)))
            for pid, s in zip(ids.tolist(), scores.tolist(), strict=True):
                if pid in given:
                    continue
                miss[pid] = miss.get(pid, 1.0) * (1.0 - s)
                if s > best.get(pid, (-1.0, 0))[0]:
                    best[pid] = (s, anchor)
        ids = np.array(sorted(miss, key=lambda p: (miss[p], p)), dtype=np.int64)
        scores = 1.0 - np.array([miss[p] for p in ids.tolist()], dtype=np.float64)
        anchors = np.array([best[p][1] for p in ids.tolist()], dtype=np.int64)
        return ids, scores, anchors


@dataclass(frozen=True)
class Trend:
    product_ids: np.ndarray  # (n,) rising products, best first
    z: np.ndarray  # (n,) how far the recent count is above the product's own baseline (Poisson z-score)
    scores: np.ndarray  # (n,) z on the 0..1 scale


def rising(recent: np.ndarray, baseline: np.ndarray, recent_hours: float, baseline_hours: float,
           min_shoppers: int) -> tuple[np.ndarray, np.ndarray]:
    """The trend measure of things counted in two windows (distinct shoppers, aligned arrays): (z, rising mask)
    with z = (r - e) / sqrt(e + 1), e = the baseline scaled to the recent window's length."""
    expected = np.asarray(baseline, np.float64) * (recent_hours / baseline_hours)
    r = np.asarray(recent, np.float64)
    z = (r - expected) / np.sqrt(expected + 1.0)
    return z, (r >= min_shoppers) & (z > 0)


def trending(recent: tuple[np.ndarray, np.ndarray], baseline: tuple[np.ndarray, np.ndarray],
             recent_hours: float, baseline_hours: float, min_shoppers: int, limit: int = 2000) -> Trend:
    """Products whose distinct shoppers in the recent window rise against their own baseline rate (`rising`):
    a steadily popular product has z near 0 (not trending), a quiet one many shoppers suddenly look at has a
    large z; counting distinct shoppers means one shopper's burst counts once. `recent`/`baseline` are
    (product_ids, shoppers); the `limit` strongest are kept."""
    base = dict(zip(baseline[0].tolist(), baseline[1].tolist(), strict=True))
    ids = np.asarray(recent[0], np.int64)
    z, keep = rising(recent[1], np.array([base.get(p, 0.0) for p in ids.tolist()]), recent_hours, baseline_hours,
                     min_shoppers)
    ids, z = ids[keep], z[keep]
    order = np.lexsort((ids, -z))[:limit]
    ids, z = ids[order], z[order]
    return Trend(ids, z, z / (z + TREND_HALF))


@dataclass(frozen=True)
class CategoryTrend:
    paths: tuple[tuple[str, ...], ...]  # rising categories (a path prefix each), best first
    z: np.ndarray  # (n,) the same measure as products' (`rising`)
    scores: np.ndarray  # (n,) z on the 0..1 scale
    shoppers: np.ndarray  # (n,) distinct shoppers in the recent window
    expected: np.ndarray  # (n,) what the baseline predicts for it


def trending_categories(recent: tuple[list[tuple[str, ...]], np.ndarray],
                        baseline: tuple[list[tuple[str, ...]], np.ndarray], recent_hours: float,
                        baseline_hours: float, min_shoppers: int) -> CategoryTrend:
    """Categories whose distinct shoppers rise against their own baseline, best first (ties by path)."""
    base = dict(zip(baseline[0], baseline[1].tolist(), strict=True))
    paths, r = recent[0], np.asarray(recent[1], np.float64)
    b = np.array([base.get(p, 0.0) for p in paths])
    z, keep = rising(r, b, recent_hours, baseline_hours, min_shoppers)
    kept = sorted((i for i in range(len(paths)) if keep[i]), key=lambda i: (-z[i], paths[i]))
    rows = np.array(kept, np.int64)
    return CategoryTrend(tuple(paths[i] for i in kept), z[rows], z[rows] / (z[rows] + TREND_HALF), r[rows],
                         b[rows] * (recent_hours / baseline_hours))
