"""The steps after the candidate sources, shared by every widget: filters, purchased products, min_score,
diversity, length. Every score on the way is on one scale, 0..1 (see `Pick`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from appliance.recommender import CatalogView, FeedQuery


@dataclass(frozen=True, slots=True)
class Pick:
    """One recommended product. `score` is in 0..1 for every source, so items of several sources in one
    answer compare: similarity (cosine + 1) / 2, co-occurrence (Ochiai), trend z / (z + 3), popularity
    relative to the most popular product, recency of a view 2^(-age / 1 day)."""

    product_id: int
    score: float
    source: str  # bought_together / related / similar / trending / popular / recently_viewed
    reason: str  # what a storefront can show: "bought with X", "trending in Shoes"
    parts: dict[str, float] = field(default_factory=dict)  # the score's parts (explain=true)


@dataclass(frozen=True)
class Finish:
    """What the pipeline applies after a source: the feed's filters, and who is asking."""

    query: FeedQuery  # categories, price range, stock, exclude, min_score (on the 0..1 scale)
    k: int
    purchased: frozenset[int] = frozenset()  # left out (the shopper bought them)
    max_in_row: int = 0  # diversity: at most this many in a row sharing `diversity_by` (0: off)
    diversity_by: str = "brand"  # brand / subcategory


def finish(view: CatalogView, picks: Sequence[Pick], how: Finish) -> list[Pick]:
    """The picks that pass the filters, best first, de-duplicated, diversified, at most `k`."""
    keep = view.mask(how.query)
    seen: set[int] = set()
    out = []
    for pick in picks:
        row = view.row.get(pick.product_id)
        if row is None or not keep[row] or pick.product_id in how.purchased or pick.product_id in seen:
            continue
        if how.query.min_score is not None and pick.score < how.query.min_score:
            continue
        seen.add(pick.product_id)
        out.append(pick)
    if how.max_in_row > 0:
        attribute = "merchant" if how.diversity_by == "brand" else "category_path"
        out = diversify(out, lambda p: getattr(view.products[p.product_id], attribute), how.max_in_row)
    return out[:how.k]


def diversify(picks: Sequence[Pick], key: Callable[[Pick], object], max_in_row: int) -> list[Pick]:
    """The same picks with no more than `max_in_row` consecutive ones sharing `key` (a brand, a subcategory),
    keeping the order otherwise: a pick that would extend a run waits for the first place it may go; when
    nothing else is left, the rest follow in order."""
    waiting = list(picks)
    out: list[Pick] = []
    while waiting:
        run_key = key(out[-1]) if out else None
        run = 0
        for p in reversed(out):
            if key(p) != run_key:
                break
            run += 1
        i = next((j for j, p in enumerate(waiting) if run < max_in_row or key(p) != run_key), 0)
        out.append(waiting.pop(i))
    return out
