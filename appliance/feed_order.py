"""One feed page from a snapshot's sources, on the widgets' 0..1 score scale (appliance/types.py `Pick`):
the sources filtered (the request's filters, purchases, hidden products, `min_score` on every source),
interleaved by share, diversified (at most `max_in_row` in a row of one brand or subcategory), the pins put
at their feed positions, then the page's slice.

Every step is a function of the snapshot and the request only, and each keeps prefixes (the first N items
do not depend on how many more are asked for), so the pages of one `feed_id` join with no duplicates and no
gaps: page 2 is positions 21..40 of the same sequence page 1 began.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np

from appliance.catalog_view import CatalogView
from appliance.finish import diversify
from appliance.merch import Merch
from appliance.pipeline import FeedQuery, Selection, members
from appliance.ranking import Source, interleave
from appliance.types import Pick, Product

REASONS = {"new": "new arrival", "pinned": "pinned", "price": "by price"}
_NONE = np.zeros(0, np.int64)


class Beyond(Exception):
    """A page of a superseded snapshot needs more of a source than the head it keeps (`Catalogued.head`): its
    order past the head is no longer known, so the feed_id is answered as expired."""


@dataclass(frozen=True)
class Catalogued:
    """A source over every row: the order best first under the rules, each row's place in it, its score
    (0..1, after the rules) and the score before the rules. Or a source over some rows (`by_position`): the
    new arrivals, or the head of a source (`head`: the first rows of its order with their scores, all a
    superseded snapshot keeps)."""

    order: np.ndarray  # rows best first (every row for popular, the new arrivals for new)
    rank: np.ndarray | None  # (n,) position of each row in `order` when it holds every row
    score: np.ndarray  # (n,) per row, times `scale`; by position: per position in `order`
    base: np.ndarray  # (n,) per row, times `scale`; by position: per position in `order`
    part: str  # what the base score is: popularity / freshness
    kept: np.ndarray | None = None  # by position: its rows sorted, to find their positions (None: per row)
    where: np.ndarray | None = None  # by position: the position in `order` of each of `kept`
    whole: bool = True  # whether `order` is the source's whole order (a head may be all of it)
    scale: float = 1.0  # the arrays' values are the scores times this (popularity over the most popular's)

    @classmethod
    def by_position(cls, rows: np.ndarray, score: np.ndarray, base: np.ndarray, part: str,
                    whole: bool = True) -> Catalogued:
        """A source of these `rows` (best first), scored per position: O(rows) memory, not O(catalog)."""
        where = np.argsort(rows, kind="stable")
        return cls(rows, None, score, base, part, rows[where], where, whole)

    def _at(self, rows: np.ndarray) -> np.ndarray:
        if self.kept is None:
            return rows
        assert self.where is not None
        return self.where[np.searchsorted(self.kept, rows)]

    def score_of(self, rows: np.ndarray) -> np.ndarray:
        """The scores of these rows (of a source by position: rows it holds)."""
        return self.score[self._at(rows)] / self.scale

    def base_of(self, rows: np.ndarray) -> np.ndarray:
        return self.base[self._at(rows)] / self.scale

    def row_scores(self) -> np.ndarray:
        """(n,) the score of every row (a source over every row)."""
        assert self.kept is None, "a source by position scores only its own rows"
        return self.score / self.scale

    def scores_in_order(self) -> np.ndarray:
        """The score of each row of `order`, in its order (falling)."""
        return (self.score if self.kept is not None else self.score[self.order]) / self.scale

    def head(self, count: int, hidden: np.ndarray) -> Catalogued:
        """The first `count` rows of the whole order that `hidden` (sorted rows the rules hide, which every
        page skips) leaves, with their scores: O(count) memory where the whole source holds O(catalog)."""
        visible = self.order[~members(hidden, self.order)] if len(hidden) else self.order
        rows = np.array(visible[:count], np.int64)  # a copy: a slice would keep the whole array alive
        score = self.score_of(rows)
        base = score if self.base is self.score else self.base_of(rows)
        return Catalogued.by_position(rows, score, base, self.part, len(rows) == len(visible))

    def emptied(self) -> Catalogued:
        """Nothing of the source, known to be short of it: every page asking for any row is `Beyond` it."""
        rows, scores = np.zeros(0, np.int64), np.zeros(0)
        return Catalogued(rows, None, scores, scores, self.part, rows, rows, False)


class Nearest(msgspec.Struct, frozen=True, gc=False):
    """The shopper's nearest products, best first under the rules (cosine + the tower's prior, the rules
    moving the similarity); `anchor[row]`: the product of their history nearest to that row (the reason).
    Untracked by the cyclic collector, as `Sources` and the snapshot holding them (appliance/recommender.py):
    arrays and a dict of ints, never part of a cycle, kept per feed_id for `feed.snapshot_seconds`."""

    rows: np.ndarray
    score: np.ndarray  # similarity (cosine + 1) / 2 after the rules
    base: np.ndarray  # similarity before the rules
    prior: np.ndarray  # the tower's popularity prior added to the cosine for the order (0 without one)
    anchor: dict[int, int]


class Sources(msgspec.Struct, frozen=True, gc=False):
    """A snapshot's candidate sources (a personal one per personal feed_id, so untracked as `Nearest` is: it
    refers to shared objects that never refer back to a snapshot)."""

    merch: Merch
    popular: Catalogued
    new: Catalogued  # only `order` rows are new arrivals
    nearest: Nearest | None  # None: not personal
    shares: tuple[float, float, float]  # personal, new, popular


@dataclass(frozen=True)
class Diversity:
    max_in_row: int  # 0: off
    keys: Callable[[list[int]], list[object]]  # rows -> their brands or subcategories (None: none)


def ranked_page(sources: Sources, query: FeedQuery, selection: Selection, diversity: Diversity
                ) -> tuple[list[tuple[int, float, str]], int]:
    """The page's (row, score, source) and the feed's honest total under the same filters."""
    start, end = query.span
    pins = [(rule, row) for rule, row in sources.merch.pins if selection.allows(np.array([row], np.int64))[0]]
    pinned = np.unique(np.array([row for _, row in pins], np.int64)) if pins else _NONE
    if query.min_score is not None:
        selection = selection.within(_passing(sources, query.min_score, pinned, selection))
    total, taken = selection.total, {row for _, row in pins}  # pins take their own places, not the sources'
    limit = end + 4 * diversity.max_in_row + len(taken)
    while True:
        merged = _merged(sources, selection, query.min_score, limit)
        exhausted = len(merged) < limit
        merged = [m for m in merged if m[0] not in taken] if taken else merged
        if diversity.max_in_row > 0:
            keys = diversity.keys([m[0] for m in merged])
            order = diversify(range(len(merged)), keys.__getitem__, diversity.max_in_row, end, exhausted)
            merged = [merged[i] for i in order]
        if len(merged) >= end or exhausted:
            break
        limit *= 2
    out = merged[:end]
    for rule, row in pins:  # in position order; a pin beyond the feed's end takes its last place
        assert rule.position is not None
        at = min(rule.position, total) - 1
        if at < end:
            at = min(at, len(out))
            score = out[at][1] if at < len(out) else (out[-1][1] if out else 1.0)
            out.insert(at, (row, score, "pinned"))
    return out[start:end], total


def _head(source: Catalogued, selection: Selection, depth: int, min_score: float | None) -> np.ndarray:
    rows = selection.head(source.order, depth, source.rank)
    if len(rows) < depth and not source.whole:
        raise Beyond  # the rows after the head would follow
    return rows if min_score is None else rows[source.score_of(rows) >= min_score]  # a prefix: scores fall


def _merged(sources: Sources, selection: Selection, min_score: float | None, limit: int
            ) -> list[tuple[int, float, str]]:
    popular = _head(sources.popular, selection, 2 * limit, min_score)
    nearest = sources.nearest
    if nearest is None:
        rows, scores, names = popular[:limit], sources.popular.score_of(popular[:limit]), ["popular"] * limit
    else:
        keep = selection.allows(nearest.rows)
        if min_score is not None:
            keep &= nearest.score >= min_score
        new = _head(sources.new, selection, 2 * limit, min_score)
        personal_share, new_share, popular_share = sources.shares
        rows, scores, names = interleave([
            Source("personal", nearest.rows[keep][:2 * limit], nearest.score[keep][:2 * limit], personal_share),
            Source("new", new, sources.new.score_of(new), new_share),
            Source("popular", popular, sources.popular.score_of(popular), popular_share),
        ], limit)
    return list(zip(rows.tolist(), scores.tolist(), names, strict=False))


def _passing(sources: Sources, min_score: float, pinned: np.ndarray, selection: Selection) -> np.ndarray:
    """Sorted rows some source scores at least `min_score` (the first to reach a row shows its score, and
    each source is filtered by its own), plus the pins (they take the score of their place)."""
    parts = [_scoring(sources.popular, min_score), pinned]
    if sources.nearest is not None:
        nearest = sources.nearest
        parts.append(nearest.rows[nearest.score >= min_score])
        parts.append(_scoring(sources.new, min_score))
    return np.unique(np.concatenate(parts))


def _scoring(source: Catalogued, min_score: float) -> np.ndarray:
    """The rows of a source scoring at least `min_score` (scores fall along its order: of a head whose last
    row passes, rows past it may pass too)."""
    passing = source.scores_in_order() >= min_score
    if len(passing) and passing[-1] and not source.whole:
        raise Beyond
    return source.order[passing]


def picks(view: CatalogView, chosen: list[tuple[int, float, str]], sources: Sources | None, explain: bool,
          ) -> tuple[list[Pick], dict[int, Product]]:
    """Wire-ready picks (a reason a storefront can show, the score's parts when asked) and their products."""
    products = view.products
    found = view.product_all[np.fromiter((c[0] for c in chosen), np.int64, len(chosen))].tolist()
    anchor = sources.nearest.anchor if sources is not None and sources.nearest is not None else {}
    out, shown = [], {}
    for (row, score, name), product in zip(chosen, found, strict=True):
        if product is None:  # removed since the snapshot
            continue
        pid = product.product_id
        if name == "personal":
            viewed = products.get(anchor.get(row, -1))
            reason = f"because you viewed {viewed.name}" if viewed is not None else "picked for you"
        elif name == "popular":
            reason = f"popular in {product.category_path[-1]}" if product.category_path else "popular"
        else:
            reason = REASONS[name]
        parts = _parts(sources, row, name, pid) if explain and sources is not None else {}
        out.append(Pick(pid, score, name, reason, parts))
        shown[pid] = product
    return out, shown


def _parts(sources: Sources, row: int, name: str, pid: int) -> dict[str, float]:
    if name == "pinned":
        return {"pin_rule": float(next(r.rule_id for r, pinned in sources.merch.pins if pinned == row))}
    if name == "personal":
        nearest = sources.nearest
        assert nearest is not None
        at = int(np.flatnonzero(nearest.rows == row)[0])
        parts = {"similarity": float(nearest.base[at]), "popularity_prior": float(nearest.prior[at])}
    else:
        source = sources.new if name == "new" else sources.popular
        parts = {source.part: float(source.base_of(np.array([row], np.int64))[0])}
    return parts | sources.merch.parts(row)
