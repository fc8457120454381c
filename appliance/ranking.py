"""The feed's orders over the catalog view's rows (popularity, price, new arrivals, the serving tower's prior) and
the merging of ranked candidate sources into one order: pure functions over row indices."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from appliance.catalog_view import CatalogView


def cold_popularity(popularity: np.ndarray, known: np.ndarray, quantile: float) -> np.ndarray:
    """(..., N) popularity, (..., N) bool `known` (products with an event) -> (..., 1): the popularity a product
    without any event is ranked with, the `quantile` of the known products' popularity in its row (0 for
    quantile 0 or when none is known). A product nobody has touched yet is unknown, not unwanted; a quantile
    (not a constant) keeps its place among the known products whatever the shop's traffic."""
    popularity = np.asarray(popularity)  # its own dtype: training's snapshots are float32
    if quantile <= 0.0:
        return np.zeros((*popularity.shape[:-1], 1), dtype=popularity.dtype)
    known = np.broadcast_to(known, popularity.shape)
    ordered = np.sort(np.where(known, popularity, -np.inf), axis=-1)  # the unknown first, then the known ascending
    count = known.sum(-1, keepdims=True)  # (..., 1)
    at = popularity.shape[-1] - count + np.floor(quantile * np.maximum(count - 1, 0)).astype(np.int64)
    fill = np.take_along_axis(ordered, np.minimum(at, popularity.shape[-1] - 1), axis=-1)
    return np.where(count > 0, fill, 0).astype(popularity.dtype)


def popularity_prior(
    popularity: np.ndarray, known: np.ndarray | None = None, cold: np.ndarray | float = 0.0
) -> np.ndarray:
    """The term a tower's learned `popularity_weight` multiplies, (..., N) -> (..., N): log(1 + popularity)
    (negatives clip to 0) of the `known` products (None: all); the others rank with `cold`, the popularity
    `cold_popularity` gives them (the tower's `cold_quantile`; 0: below every product with an event).
    Training, evaluation and serving all rank with these two functions. torch's log1p (vectorised; numpy's is
    not): a training step's (512, 1,442) block 12.5 -> ~3 ms, within one ulp of numpy's (BENCHMARKS.md
    "Training", sixth round)."""
    popularity = np.asarray(popularity)
    if known is not None:
        popularity = np.where(known, popularity, cold)
    if not np.issubdtype(popularity.dtype, np.floating):
        popularity = popularity.astype(np.float64)
    tensor = torch.as_tensor(popularity) if popularity.flags.writeable else torch.tensor(popularity)
    return tensor.clamp(min=0.0).log1p_().numpy()


def by_prior(rows: np.ndarray, cosines: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    """Order of nearest products (rows (n,), their cosines (n,)) by cosine + weight * prior[rows], with `prior`
    (N,) the catalog's `popularity_prior`."""
    if weight == 0.0:
        return np.argsort(-cosines, kind="stable")
    return np.argsort(-(cosines + weight * prior[rows]), kind="stable")


@dataclass(frozen=True)
class Source:
    name: str  # personal / popular / new: what each item says about why it is there
    rows: np.ndarray  # (n,) catalog rows, best first
    scores: np.ndarray  # (n,) the score shown with each row
    share: float  # the part of the feed this source fills while it has candidates


def interleave(sources: Sequence[Source], limit: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Up to `limit` rows, each taken from the source whose share is most behind (smooth weighted round robin).

    A row appears once (first source to reach it wins); a source that runs out leaves its share to the others.
    Sources come filtered (`Selection.head`): a head of 2 * limit rows gives the same result as the whole source,
    since the other sources can take at most `limit` of its rows first. Deterministic.

    While every source has rows for its turns, which source takes each place depends on the shares alone
    (`_turns`, computed once per shares and limit), so the rows are gathered with one index; only when two
    sources bring the same row or one runs short is the walk done step by step.
    """
    live = [s for s in sources if s.share > 0 and len(s.rows)]
    if not live or limit <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), []
    turns, gather, counts, _ = _turns(tuple(s.share for s in live), limit)
    if all(len(s.rows) >= c for s, c in zip(live, counts, strict=True)):
        rows = np.concatenate([s.rows[:c] for s, c in zip(live, counts, strict=True)])[gather]
        if len(np.unique(rows)) == len(rows):
            scores = np.concatenate([np.asarray(s.scores[:c], np.float64)
                                     for s, c in zip(live, counts, strict=True)])[gather]
            return rows.astype(np.int64, copy=False), scores, [live[t].name for t in turns]
    return _walk(live, limit)


@functools.lru_cache(maxsize=256)
def _turns(
    shares: tuple[float, ...], limit: int
) -> tuple[list[int], np.ndarray, tuple[int, ...], list[tuple[float, ...]]]:
    """The smooth weighted round robin over sources that never run out: the source of each of `limit` places,
    where each place's row sits in the concatenation of every source's first rows, how many each gives, and the
    credits after each place."""
    credit = [0.0] * len(shares)
    turns, credits = [], []
    for _ in range(limit):
        total = 0.0
        for i, share in enumerate(shares):
            credit[i] += share
            total += share
        pick = max(range(len(shares)), key=credit.__getitem__)
        credit[pick] -= total
        turns.append(pick)
        credits.append(tuple(credit))
    counts = [0] * len(shares)
    seen = []
    for t in turns:
        seen.append(counts[t])
        counts[t] += 1
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    gather = offsets[np.asarray(turns, np.int64)] + np.asarray(seen, np.int64)
    return turns, gather, tuple(counts), credits


def _walk(live: Sequence[Source], limit: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`interleave` one place at a time (sources that share rows or run out). Until a source runs out, each
    place's source is `_turns`' (a row another source took first is skipped, which moves no credit); from then
    on the credits are those turns' and the walk goes on over the sources left."""
    used: set[int] = set()
    shares = [s.share for s in live]
    candidates = [s.rows.tolist() for s in live]
    pointers = [0] * len(live)
    turns, _, _, credits = _turns(tuple(shares), limit)
    credit: list[float] | None = None  # the round robin's credits, once a source has run out
    picked: list[tuple[int, int]] = []  # (source, position in it)
    left = list(range(len(live)))
    walked = 0  # places walked (a source found empty takes a place's turn and gives it up)
    while len(picked) < limit and left:
        if credit is None:
            pick = turns[walked]
        else:
            total = 0.0
            for i in left:
                credit[i] += shares[i]
                total += shares[i]
            pick = max(left, key=credit.__getitem__)
            credit[pick] -= total
        walked += 1
        mine, p = candidates[pick], pointers[pick]
        while p < len(mine) and mine[p] in used:
            p += 1
        if p == len(mine):
            left.remove(pick)
            pointers[pick] = p
            if credit is None:
                credit = list(credits[walked - 1])
            continue
        used.add(mine[p])
        picked.append((pick, p))
        pointers[pick] = p + 1
    rows = np.array([candidates[i][p] for i, p in picked], dtype=np.int64)
    scores = np.array([float(live[i].scores[p]) for i, p in picked], dtype=np.float64)
    return rows, scores, [live[i].name for i, _ in picked]


def cold_slots(order: np.ndarray, cold_order: np.ndarray, share: float, limit: int) -> np.ndarray:
    """The tower's list with products nobody has touched yet at fixed slots: up to `limit` of `order` (the
    tower's, best first) interleaved with `cold_order` (products without any event, best first by similarity
    alone: the prior cannot rank them) filling `share` of the places (`interleave`), each product once.

    The prior that serves the shoppers whose next product is a known one pushes every unknown one down; a share
    of their own gives the few whose next product is new a place in the list at a bounded cost to the others.
    The feed's personal source and the evaluation's tower row both order with this function."""
    share = round(share, 6)  # the checkpoint's float32 share (0.1 -> 0.10000000149) must not move the slots
    if share <= 0.0 or not len(cold_order):
        return order[:limit]
    none = np.zeros(max(len(order), len(cold_order)))
    # the cold source has had a turn per product after (len + 1) / share picks (a smooth round robin keeps each
    # source within one pick of its share); from there on the list is the tower's, so interleave only that far
    reach = min(limit, int(math.ceil((len(cold_order) + 1) / share)) + 1)
    rows, _, _ = interleave([Source("personal", order, none, 1.0 - share), Source("cold", cold_order, none, share)],
                            reach)
    if reach < limit:
        rows = np.concatenate([rows, order[~np.isin(order, rows)][:limit - len(rows)]])
    return rows


def cold_slotted(scores: np.ndarray, cosines: np.ndarray, cold: np.ndarray, share: float, depth: int) -> np.ndarray:
    """`cold_slots` over whole score rows (evaluation and validation): scores (C, N) with excluded products at
    -inf, cosines (C, N), cold (C or 1, N) bool products without events -> (C, N) scores whose first `depth`
    places are `cold_slots`' order of the tower's first `depth` and the `depth` cold products most similar; the
    rest keep their scores, below them."""
    return cold_slotted_each(scores, cosines, cold, (share,), depth)[0]


def cold_slotted_each(
    scores: np.ndarray, cosines: np.ndarray, cold: np.ndarray, shares: Sequence[float], depth: int
) -> list[np.ndarray]:
    """`cold_slotted` for each of `shares` (a share of 0 returns `scores` itself), each row's two orders found
    once for all of them."""
    if all(share <= 0.0 for share in shares):
        return [scores for _ in shares]
    depth = min(depth, scores.shape[1])
    candidates = np.where(np.broadcast_to(cold, scores.shape) & np.isfinite(scores), cosines, -np.inf)
    orders, cold_orders = _best(scores, depth), _best(candidates, depth)
    out = [scores if share <= 0.0 else scores.copy() for share in shares]
    for r, (order, cold_order) in enumerate(zip(orders, cold_orders, strict=True)):
        if not len(order):
            continue
        for slotted, share in zip(out, shares, strict=True):
            if share > 0.0:
                placed = cold_slots(order, cold_order, share, depth)
                slotted[r, placed] = scores[r, order[0]] + np.arange(len(placed), 0, -1)  # above the row's others
    return out


def _best(rows: np.ndarray, depth: int) -> list[np.ndarray]:
    """Per row of `rows` (C, N): the columns of its `depth` highest finite values, best first."""
    top = np.argpartition(-rows, depth - 1, axis=1)[:, :depth]  # (C, depth)
    values = np.take_along_axis(rows, top, axis=1)
    ranked = np.argsort(-values, axis=1, kind="stable")
    top, values = np.take_along_axis(top, ranked, axis=1), np.take_along_axis(values, ranked, axis=1)
    return [columns[np.isfinite(best)] for columns, best in zip(top, values, strict=True)]


@dataclass(frozen=True)
class ServingPrior:
    """The serving tower's `ranking.popularity_prior` of every row: over popularity with the half-life the tower
    was trained with (not the feed's), products without events at its cold quantile, and the share of the
    personal list they take by similarity alone (its `cold_share`, `cold_slots`)."""

    values: np.ndarray  # (n,) per row
    cold: float  # the value of a product without events (rows added after it was computed)
    known: np.ndarray  # (n,) bool: rows with an event
    cold_share: float = 0.0

    @classmethod
    def of(cls, popularity: np.ndarray, cold_quantile: float, cold_share: float = 0.0) -> ServingPrior:
        known = popularity > 0  # EventStore.popularity: every product with an event is above 0
        cold = cold_popularity(popularity, known, cold_quantile)
        return cls(popularity_prior(popularity, known, cold), float(popularity_prior(cold)[0]), known, cold_share)

    def at(self, rows: np.ndarray) -> np.ndarray:
        out = np.full(len(rows), self.cold)
        inside = rows < len(self.values)
        out[inside] = self.values[rows[inside]]
        return out

    def slotted(self, rows: np.ndarray, similarity: np.ndarray) -> np.ndarray:
        """Positions into the nearest products `rows` (n,), in the tower's order, reordered by `cold_slots`:
        those without events (rows added since count too), best first by `similarity` (n,), at the share."""
        positions = np.arange(len(rows))
        if self.cold_share <= 0.0:
            return positions
        cold = np.ones(len(rows), bool)
        inside = rows < len(self.known)
        cold[inside] = ~self.known[rows[inside]]
        cold_order = positions[cold][np.argsort(-similarity[cold], kind="stable")]
        return cold_slots(positions, cold_order, self.cold_share, len(rows))


@dataclass(frozen=True)
class Ranking:
    """The default order of every row (popularity desc, newest first, then id) and what it was computed from.
    Whole-catalog arrays only where every row has a value (~29 bytes a product with the prior); the new
    arrivals' are as long as they are (20 bytes each: fewer bytes than a score per product while under 40 % of
    the catalog is new), their lookup by row made here, off the request path."""

    order: np.ndarray  # (n,) rows, best first
    rank: np.ndarray  # (n,) int32 position of each row in `order`
    popularity: np.ndarray  # (n,) decayed weighted event count per row
    new_rows: np.ndarray  # (k,) new arrivals, newest first (a slice of the view's newest-first order)
    at: float  # time.monotonic() of the popularity it uses
    top: float  # the most popular product's popularity (1 when none has any): popular items score popularity / top
    freshness: np.ndarray  # (k,) 1 - age / new_arrival_days at `now_ts` of each of `new_rows`: their score
    new_sorted: np.ndarray  # (k,) `new_rows` sorted, to find a new arrival's position
    new_where: np.ndarray  # (k,) int32 position in `new_rows` of each of `new_sorted`
    prior: ServingPrior | None = None  # the serving tower's prior over the same rows


def rank_rows(
    view: CatalogView, popularity: np.ndarray, now_ts: float, new_days: float, at: float,
    prior: ServingPrior | None = None,
) -> Ranking:
    newest = view.newest_first()
    n = len(newest)
    created = view.created_all[:n]
    popularity = popularity[:n]
    order = newest[np.argsort(-popularity[newest], kind="stable")]  # popularity desc, then newest, then id
    new_rows = newest[:np.count_nonzero(created >= now_ts - new_days * 86400.0)]  # newest first, then id
    top = float(popularity.max()) if n and popularity.max() > 0 else 1.0
    freshness = np.clip(1.0 - (now_ts - created[new_rows]) / (new_days * 86400.0), 0.0, 1.0)
    where = np.argsort(new_rows, kind="stable")
    return Ranking(order, positions(order), popularity, new_rows, at, top, freshness, new_rows[where],
                   where.astype(np.int32), prior)


def positions(order: np.ndarray) -> np.ndarray:
    """(n,) int32 position of each row in `order`, a permutation of the rows (int32: half the bytes of int64, and
    a rank is only ever sorted by)."""
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return rank


def price_ranking(view: CatalogView, ascending: bool) -> tuple[np.ndarray, np.ndarray]:
    price = np.where(np.isnan(view.price), np.inf, view.price)  # unpriced products go last
    key = price if ascending else -np.where(np.isinf(price), -np.inf, price)
    order = np.lexsort((view.ids, key))
    return order, positions(order)
