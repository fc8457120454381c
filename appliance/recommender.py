"""Feeds: named candidate sources (personal, new, popular) merged by one pipeline over an in-memory catalog view.

The recommender holds no I/O of its own: it is handed callables that load the catalog and popularity. The
catalog view is loaded once and then patched in place on every product change (`apply_changes`), so no feed
ever waits on a reload; popularity is recomputed in the background every `popularity_ttl_seconds` while the
previous ranking keeps serving; a shopper's nearest products are looked up once per user vector.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.pipeline import FeedPage, FeedQuery, Selection
from appliance.ranking import Source, by_prior, cold_popularity, interleave, popularity_prior
from appliance.types import Product, Scored

# (vector, k) -> (product ids, cosine similarities), best first
Nearest = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Personal:
    """What the feed knows about one shopper."""

    vector: np.ndarray | None  # (D,) unit vector in the product space, None: not personalised
    purchased: frozenset[int] = frozenset()  # left out when the feed is configured to exclude them
    popularity_weight: float = 0.0  # the serving tower's prior: nearest products rank by cosine + this * log(1 + pop)
    key: Hashable = None  # names this vector (e.g. customer and update time): its nearest products are cached


@dataclass(frozen=True)
class FeedSettings:
    personal_share: float  # part of the feed filled by nearest products
    new_share: float  # part filled by new arrivals
    new_arrival_days: float
    personal_depth: int  # nearest products fetched per feed
    exclude_purchased: bool
    snapshot_seconds: float  # how long a feed_id keeps its order
    snapshot_max: int  # feed_ids kept at once (oldest dropped first)
    candidate_cache: int  # shoppers whose nearest products are remembered
    personal_first_depth: int  # nearest products looked up first; a deeper or filtered page extends to personal_depth


@dataclass(frozen=True)
class ServingPrior:
    """The serving tower's `ranking.popularity_prior` of every row: over popularity with the half-life the tower
    was trained with (not the feed's), products without events at its cold quantile."""

    values: np.ndarray  # (n,) per row
    cold: float  # the value of a product without events (rows added after it was computed)

    @classmethod
    def of(cls, popularity: np.ndarray, cold_quantile: float) -> ServingPrior:
        known = popularity > 0  # EventStore.popularity: every product with an event is above 0
        cold = cold_popularity(popularity, known, cold_quantile)
        return cls(popularity_prior(popularity, known, cold), float(popularity_prior(cold)[0]))

    def at(self, rows: np.ndarray) -> np.ndarray:
        out = np.full(len(rows), self.cold)
        inside = rows < len(self.values)
        out[inside] = self.values[rows[inside]]
        return out


@dataclass(frozen=True)
class Ranking:
    """The default order of every row (popularity desc, newest first, then id) and what it was computed from."""

    order: np.ndarray  # (n,) rows, best first
    rank: np.ndarray  # (n,) position of each row in `order`
    popularity: np.ndarray  # (n,) decayed weighted event count per row
    new_rows: np.ndarray  # new arrivals, newest first
    at: float  # time.monotonic() of the popularity it uses
    prior: ServingPrior | None = None  # the serving tower's prior over the same rows


@dataclass(frozen=True)
class _Snapshot:
    """Everything a feed order is computed from, so later pages are computed from the same inputs."""

    ranking: Ranking
    personal_rows: np.ndarray
    personal_scores: np.ndarray
    purchased: frozenset[int]
    created: float
    shallow: Personal | None = None  # whose nearest products these are while the list may be extended, else None


def rank_rows(
    view: CatalogView, popularity: np.ndarray, now_ts: float, new_days: float, at: float,
    prior: ServingPrior | None = None,
) -> Ranking:
    n = len(view)
    ids, created = view.ids, view.created
    order = np.lexsort((ids, -created, -popularity[:n]))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    new_rows = np.flatnonzero(created >= now_ts - new_days * 86400.0)
    new_rows = new_rows[np.lexsort((ids[new_rows], -created[new_rows]))]
    return Ranking(order, rank, popularity[:n], new_rows, at, prior)


def _price_ranking(view: CatalogView, ascending: bool) -> tuple[np.ndarray, np.ndarray]:
    price = np.where(np.isnan(view.price), np.inf, view.price)  # unpriced products go last
    key = price if ascending else -np.where(np.isinf(price), -np.inf, price)
    order = np.lexsort((view.ids, key))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return order, rank


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
        load_prior: Callable[[datetime], tuple[np.ndarray, np.ndarray, float]] | None = None,
    ) -> None:
        """`load_popularity(now)` is the feed's (ids, popularity); `load_prior(now)` the serving tower's (ids,
        popularity with its trained half-life, cold quantile), None: the feed's popularity, no cold quantile."""
        self._load_catalog = load_catalog
        self._load_popularity = load_popularity
        self._load_prior = load_prior
        self._nearest = nearest
        self._clock = clock
        self._ttl = popularity_ttl_seconds
        self.settings = settings
        self._lock = threading.Lock()  # guards the caches below (held briefly)
        self._patch = threading.Lock()  # one catalog patch or popularity computation at a time
        self._view: CatalogView | None = None
        self._ranking: Ranking | None = None
        self._refreshing = False
        self._prices: dict[bool, tuple[int, np.ndarray, np.ndarray]] = {}  # ascending -> (version, order, rank)
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()  # oldest first
        # key -> (rows, cosines, complete: no deeper lookup can add any)
        self._candidates: OrderedDict[Hashable, tuple[np.ndarray, np.ndarray, bool]] = OrderedDict()

    def view(self) -> CatalogView:
        view = self._view
        if view is None:
            with self._patch:
                if self._view is None:
                    self._view = CatalogView(self._load_catalog())
                view = self._view
        return view

    def warm(self) -> bool:
        """Whether the view and a ranking are loaded (a feed then needs no catalog or popularity read)."""
        return self._view is not None and self._ranking is not None

    def knows(self, personal: Personal, query: FeedQuery | None = None) -> bool:
        """Whether this shopper's nearest products are cached deep enough for `query` (a feed then needs no
        index lookup)."""
        hit = self._candidates.get(personal.key) if personal.key is not None else None
        return hit is not None and (hit[2] or query is None or len(hit[0]) >= self._depth(query, personal))

    def _depth(self, query: FeedQuery, personal: Personal) -> int:
        """Nearest products a page needs: its source head (2 x the page end, purchases left out) unfiltered,
        the full depth when a filter may drop many."""
        settings = self.settings
        filtered = query.categories or query.min_price is not None or query.max_price is not None or \
            query.in_stock is not None or query.exclude or query.min_score is not None
        if filtered:
            return settings.personal_depth
        need = 2 * query.span[1] + (len(personal.purchased) if settings.exclude_purchased else 0)
        return settings.personal_first_depth if need <= settings.personal_first_depth else settings.personal_depth

    def apply_changes(self, product_ids: Sequence[int], load: Callable[[Sequence[int]], Sequence[Product]]) -> None:
        """Patch the view after products were written or deleted: `load(ids)` reads those that still exist.
        Reading and patching under one lock keeps the view at the newest committed state."""
        with self._patch:
            view = self._view
            if view is None:
                return  # not loaded yet: the first load reads the new state
            found = load(product_ids)
            present = {p.product_id for p in found}
            view.remove([pid for pid in product_ids if pid not in present])
            new_rows = view.upsert(found)
            ranking = self._ranking
            if len(new_rows) and ranking is not None:  # new products join the order with no popularity yet
                popularity = np.zeros(len(view))
                popularity[:len(ranking.popularity)] = ranking.popularity
                now = self._clock().timestamp()
                self._ranking = rank_rows(view, popularity, now, self.settings.new_arrival_days, ranking.at,
                                          ranking.prior)

    def popularity_of(self, view: CatalogView) -> tuple[np.ndarray, np.ndarray]:
        """Rows in the default order (popularity desc, newest first, then id) and each row's popularity."""
        ranking = self._ranked()
        return ranking.order, ranking.popularity

    def refresh_popularity(self) -> int:
        """Recompute popularity now (the scheduled job); how many products have any."""
        return int(np.count_nonzero(self._refresh().popularity))

    def _refresh(self) -> Ranking:
        view = self.view()
        now = self._clock()
        ids, scores = self._load_popularity(now)
        prior_ids, prior_scores, cold_quantile = self._load_prior(now) if self._load_prior else (ids, scores, 0.0)
        with self._patch:
            popularity, prior = self._per_row(view, ids, scores), self._per_row(view, prior_ids, prior_scores)
            ranking = rank_rows(view, popularity, now.timestamp(), self.settings.new_arrival_days, time.monotonic(),
                                ServingPrior.of(prior, cold_quantile))
            self._ranking = ranking
        return ranking

    @staticmethod
    def _per_row(view: CatalogView, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        out = np.zeros(len(view), dtype=np.float64)
        rows, known = view.rows_of_array(np.asarray(ids, dtype=np.int64))
        out[rows] = np.asarray(scores, dtype=np.float64)[known]
        return out

    def _ranked(self) -> Ranking:
        """The current ranking; once it is older than the TTL, one background thread computes the next."""
        ranking = self._ranking
        if ranking is None:
            return self._refresh()
        if time.monotonic() - ranking.at >= self._ttl:
            with self._lock:
                start, self._refreshing = not self._refreshing, True
            if start:
                threading.Thread(target=self._refresh_in_background, name="popularity", daemon=True).start()
        return ranking

    def _refresh_in_background(self) -> None:
        try:
            self._refresh()
        finally:
            self._refreshing = False

    def _price_order(self, view: CatalogView, ascending: bool) -> tuple[np.ndarray, np.ndarray]:
        cached = self._prices.get(ascending)
        if cached is not None and cached[0] == view.version:
            return cached[1], cached[2]
        version = view.version
        order, rank = _price_ranking(view, ascending)
        self._prices[ascending] = (version, order, rank)
        return order, rank

    def nearest_rows(self, personal: Personal, view: CatalogView, depth: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """The shopper's `depth` nearest products as (rows, cosines, complete), best first; cached per
        `personal.key`, looked up again only when a deeper list is asked for."""
        key = personal.key
        if key is not None:
            with self._lock:
                hit = self._candidates.get(key)
                if hit is not None and (hit[2] or len(hit[0]) >= depth):
                    self._candidates.move_to_end(key)
                    return hit
        ids, sims = self._nearest(personal.vector, depth)
        id_list = ids.tolist()
        products, row = view.products, view.row
        known = [i for i, pid in enumerate(id_list) if pid in products]
        rows = np.fromiter((row[id_list[i]] for i in known), np.int64, len(known))
        complete = len(id_list) < depth or depth >= self.settings.personal_depth
        found = (rows, np.asarray(sims, dtype=np.float64)[known], complete)
        if key is not None:
            with self._lock:
                self._candidates[key] = found
                while len(self._candidates) > self.settings.candidate_cache:
                    self._candidates.popitem(last=False)
        return found

    def prepare(self, personals: Sequence[Personal]) -> None:
        """Look up these shoppers' nearest products now (when their vectors change), so their feeds need not."""
        view = self.view()
        for personal in personals:
            if personal.vector is not None and not self.knows(personal):
                self.nearest_rows(personal, view, self.settings.personal_first_depth)

    def _snapshot(self, query: FeedQuery, personal: Personal | None) -> tuple[str, _Snapshot]:
        now = time.monotonic()
        with self._lock:
            while self._snapshots:  # oldest first: drop the expired ones from the front
                oldest = next(iter(self._snapshots.values()))
                if now - oldest.created <= self.settings.snapshot_seconds:
                    break
                self._snapshots.popitem(last=False)
            found = self._snapshots.get(query.feed_id) if query.feed_id else None
        if found is not None and (found.shallow is None or query.sort is not None or
                                  len(found.personal_rows) >= self._depth(query, found.shallow)):
            return query.feed_id, found  # a deeper page of a shallow snapshot extends it below
        view = self.view()
        ranking = found.ranking if found is not None else self._ranked()
        personal_rows, personal_scores, shallow = np.zeros(0, np.int64), np.zeros(0), None
        personal = found.shallow if found is not None else personal
        purchased = personal.purchased if personal is not None and self.settings.exclude_purchased else frozenset()
        if personal is not None and personal.vector is not None and query.sort is None:
            rows, sims, complete = self.nearest_rows(personal, view, self._depth(query, personal))
            shallow = None if complete else personal
            personal_rows, personal_scores = self._personal_order(ranking, personal, rows, sims, found)
        snap = _Snapshot(ranking, personal_rows, personal_scores, purchased, found.created if found else now, shallow)
        feed_id = query.feed_id if found is not None else secrets.token_urlsafe(9)
        with self._lock:
            self._snapshots[feed_id] = snap
            while len(self._snapshots) > self.settings.snapshot_max:
                self._snapshots.popitem(last=False)
        return feed_id, snap

    @staticmethod
    def _personal_order(ranking: Ranking, personal: Personal, rows: np.ndarray, sims: np.ndarray,
                        extending: _Snapshot | None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest products by cosine + the prior, scores shown as cosine + 1; when a deeper lookup extends a
        snapshot, its earlier order stays as it was and only the newly found products follow it."""
        if extending is not None:
            new = ~np.isin(rows, extending.personal_rows)
            rows, sims = rows[new], sims[new]
        prior = ranking.prior.at(rows) if ranking.prior is not None else np.zeros(len(rows))
        ranked = by_prior(np.arange(len(rows)), sims, prior, personal.popularity_weight)
        if extending is None:
            return rows[ranked], sims[ranked] + 1.0
        return (np.concatenate([extending.personal_rows, rows[ranked]]),
                np.concatenate([extending.personal_scores, sims[ranked] + 1.0]))

    def feed(self, query: FeedQuery, personal: Personal | None = None) -> FeedPage:
        feed_id, snap = self._snapshot(query, personal)
        view = self.view()
        selection = Selection.of(view, query, snap.purchased)
        start, end = query.span
        personalized = query.sort is None and len(snap.personal_rows) > 0
        if query.sort is not None:
            order, rank = self._price_order(view, query.sort == "price_asc")
            rows = selection.head(order, end, rank)[start:]
            scores, names, ordering = np.nan_to_num(view.price_all[rows]), ["price"] * len(rows), query.sort
        elif not personalized:
            ranking = snap.ranking
            rows = selection.head(ranking.order, end, ranking.rank)[start:]
            scores, names, ordering = ranking.popularity[rows], ["popular"] * len(rows), "popular"
        else:
            rows, scores, names = self._personal_page(snap, query, selection, end)
            rows, scores, names, ordering = rows[start:], scores[start:], names[start:], "personal"
        catalog = view.products
        ids = view.ids_all[rows].tolist()
        products = {pid: catalog[pid] for pid in ids if pid in catalog}  # one removed meanwhile is left out
        items = [Scored(pid, sc, n) for pid, sc, n in zip(ids, scores.tolist(), names, strict=True) if pid in products]
        return FeedPage(items, query.page, query.per_page, selection.total, ordering, products, feed_id, personalized)

    def _personal_page(
        self, snap: _Snapshot, query: FeedQuery, selection: Selection, end: int
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The sources of a personal feed (each filtered, its head long enough), interleaved by share."""
        ranking, settings, depth = snap.ranking, self.settings, 2 * end
        keep = selection.allows(snap.personal_rows)
        if query.min_score is not None:
            keep &= snap.personal_scores >= query.min_score
        personal_rows, personal_scores = snap.personal_rows[keep][:depth], snap.personal_scores[keep][:depth]
        new_rows = selection.head(ranking.new_rows, depth)
        popular_rows = selection.head(ranking.order, depth, ranking.rank)
        popular_share = max(0.0, 1.0 - settings.personal_share - settings.new_share)
        sources = [
            Source("personal", personal_rows, personal_scores, settings.personal_share),
            Source("new", new_rows, ranking.popularity[new_rows], settings.new_share),
            Source("popular", popular_rows, ranking.popularity[popular_rows], popular_share or 1e-9),
        ]
        return interleave(sources, end)
