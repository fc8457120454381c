"""Feeds: named candidate sources (personal, new, popular) merged by one pipeline over an in-memory catalog view,
every score on the widgets' 0..1 scale, the merchandising rules and diversity applied (appliance/feed_order.py).

The recommender holds no I/O of its own: it is handed callables that load the catalog and popularity. The
catalog view and its current ranking are kept live by appliance/live_ranking.py (patched in place, refreshed in
the background); a shopper's nearest products are looked up once per user vector (a shallow first list, extended
once when a deeper or filtered page asks for more).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from msgspec.structs import replace

from appliance.catalog_view import CatalogView
from appliance.feed_order import Beyond, Diversity, Nearest, picks, ranked_page
from appliance.feed_snapshot import Catalogue, Personal, Snapshot
from appliance.live_ranking import LiveRanking
from appliance.merch import NO_RULES, Merch, compile_rules
from appliance.nearest_cache import Found, Lookup, NearestCache
from appliance.pipeline import FeedPage, FeedQuery, Selection
from appliance.ranking import Ranking, ServingPrior, by_prior
from appliance.rules import Rule
from appliance.types import NO_IDS, Product


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
    max_in_row: int = 0  # diversity: at most this many in a row of one brand / subcategory (0: off)
    diversity_by: str = "brand"
    snapshot_depth: int = 500  # feed positions a snapshot keeps answering once new feeds use another ranking
    snapshot_orders: int = 64  # superseded rankings whose snapshots still answer (the oldest then expire)

    def head_rows(self) -> int:
        """Rows of each catalogued source a superseded snapshot keeps: a page ending at `snapshot_depth` merges
        the first 2 x (its end + 4 x max_in_row) allowed rows of each (appliance/feed_order.py `ranked_page`);
        half as many again for the rows a page skips (purchases, exclusions, products removed since)."""
        return 3 * (self.snapshot_depth + 4 * self.max_in_row)


class Recommender:
    """Feeds from candidate sources (personal nearest products, popular, new arrivals) merged into one order."""

    def __init__(
        self,
        load_catalog: Callable[[], Sequence[Product]],
        load_popularity: Callable[[datetime], tuple[np.ndarray, np.ndarray]],
        nearest: Lookup,
        clock: Callable[[], datetime],
        popularity_ttl_seconds: float,
        settings: FeedSettings,
        load_prior: Callable[[datetime], tuple[np.ndarray, np.ndarray, float, float]] | None = None,
        rules: Callable[[], Sequence[Rule]] = tuple,
    ) -> None:
        """The catalog, popularity and prior loaders and the TTL go to the live ranking (`LiveRanking`)."""
        self.live = LiveRanking(load_catalog, load_popularity, clock, popularity_ttl_seconds,
                                settings.new_arrival_days, load_prior)
        self._rules = rules  # every rule (the store's cached tuple: a new tuple after each write)
        self._clock = clock
        self.settings = settings
        self._lock = threading.Lock()  # guards the caches below (held briefly)
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()  # oldest first
        self._near = NearestCache(nearest, settings.personal_depth, settings.candidate_cache)
        self._merch: tuple[tuple, Merch] = ((), NO_RULES)  # (rule set, active ids, view version) -> compiled
        self._catalogued: tuple[tuple, Catalogue] | None = None  # (ranking, merch) -> the sources but the personal one
        self._superseded: deque[Catalogue] = deque()  # oldest first: those whose snapshots still answer

    def view(self) -> CatalogView:
        return self.live.view()

    def warm(self) -> bool:
        """Whether the view and a ranking are loaded (a feed then needs no catalog or popularity read)."""
        return self.live.loaded()

    def knows(self, personal: Personal, query: FeedQuery | None = None) -> bool:
        """Whether this shopper's nearest products are cached deep enough for `query` (a feed then needs no
        index lookup)."""
        return self._near.knows(personal.key, None if query is None else self._depth(query, personal))

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
        """Patch the view after products were written or deleted (`LiveRanking.apply_changes`)."""
        self.live.apply_changes(product_ids, load)

    def popularity_of(self, view: CatalogView) -> tuple[np.ndarray, np.ndarray]:
        """Rows in the default order (popularity desc, newest first, then id) and each row's popularity."""
        ranking = self.live.ranked()
        return ranking.order, ranking.popularity

    def refresh_popularity(self) -> int:
        """Recompute popularity now (the scheduled job); how many products have any."""
        return int(np.count_nonzero(self.live.refresh().popularity))

    def close(self, timeout: float = 10.0) -> None:
        """Start no more background refreshes; wait up to `timeout` s for one in progress."""
        self.live.close(timeout)

    def nearest_rows(self, personal: Personal, view: CatalogView, depth: int) -> Found:
        """The shopper's `depth` nearest products (appliance/nearest_cache.py), cached per `personal.key`."""
        return self._near.rows(personal.key, personal.vector, personal.history, view, depth)

    def prepare(self, personals: Sequence[Personal]) -> None:
        """Look up these shoppers' nearest products now (when their vectors change), so their feeds need not."""
        self._near.prepare([(p.key, p.vector, p.history) for p in personals if p.vector is not None], self.view(),
                           self.settings.personal_first_depth)

    def compiled(self, view: CatalogView) -> Merch:
        """The rules active now, compiled over the view; recompiled only when the rule set, the active subset
        or the catalog changes."""
        rules = self._rules()
        if not rules:
            return NO_RULES
        now = self._clock()
        active = tuple(r for r in rules if r.active(now))
        key = (id(rules), tuple(r.rule_id for r in active), view.version)
        cached = self._merch
        if cached[0] != key:
            cached = (key, compile_rules(view, active))
            self._merch = cached
        return cached[1]

    def _sources_of(self, ranking: Ranking, merch: Merch) -> Catalogue:
        """The popular and new-arrival sources under the rules, once per (ranking, compiled rules): every
        snapshot shares this one object (the cyclic collector walks each snapshot's objects in its full passes,
        so a snapshot is kept to as few as it needs). The one it replaces keeps only its heads."""
        cached = self._catalogued
        if cached is not None and cached[0][0] is ranking and cached[0][1] is merch:
            return cached[1]
        settings = self.settings
        shares = (settings.personal_share, settings.new_share,
                  max(0.0, 1.0 - settings.personal_share - settings.new_share) or 1e-9)
        result = Catalogue.of(ranking, merch, self.view(), shares)
        with self._lock:
            cached = self._catalogued
            if cached is not None and cached[0][0] is ranking and cached[0][1] is merch:
                return cached[1]  # another thread's, made meanwhile
            self._catalogued = ((ranking, merch), result)
        if cached is not None:  # its snapshots keep the heads their pages up to `feed.snapshot_depth` need
            cached[1].supersede(self.settings.head_rows())
            with self._lock:
                self._superseded.append(cached[1])
                retired = [self._superseded.popleft()
                           for _ in range(len(self._superseded) - self.settings.snapshot_orders)]
            for catalogue in retired:
                catalogue.retire()
        return result

    def _nearest_source(self, personal: Personal, view: CatalogView, prior_of: ServingPrior | None, merch: Merch,
                        depth: int,
                        extending: Nearest | None = None) -> tuple[Nearest, bool]:
        """The personal source (and whether no deeper lookup can add to it): nearest products by cosine (moved
        by the rules) + the tower's prior; when a deeper lookup extends a snapshot, its earlier order stays as it
        was and only the newly found products follow it."""
        found = self.nearest_rows(personal, view, depth)
        rows, cosines, complete, anchors = found.rows, found.cosines, found.complete, found.anchors
        if extending is not None:
            new = ~np.isin(rows, extending.rows)
            rows, cosines = rows[new], cosines[new]
        weight = personal.popularity_weight
        values = prior_of.at(rows) if prior_of is not None else np.zeros(len(rows))
        prior = weight * values if weight else np.zeros(len(rows))
        base = (cosines + 1.0) / 2.0
        score = merch.rescore(rows, base)
        slots = prior_of is not None and prior_of.cold_share > 0.0  # products without events at slots
        if weight or merch.moves or slots:  # the tower's order: cosine (moved by the rules) + its prior
            order = by_prior(np.arange(len(rows)), 2.0 * score - 1.0, values, weight)
            order = order[prior_of.slotted(rows[order], score[order])] if slots else order
            rows, score, base, prior = rows[order], score[order], base[order], prior[order]
        if extending is None:
            return Nearest(rows, score, base, prior, anchors), complete
        joined = [np.concatenate([old, fresh]) for old, fresh in
                  zip((extending.rows, extending.score, extending.base, extending.prior), (rows, score, base, prior),
                      strict=True)]
        return Nearest(*joined, {**anchors, **extending.anchor}), complete

    def _snapshot(self, query: FeedQuery, personal: Personal | None) -> tuple[str, Snapshot]:
        now = time.monotonic()
        with self._lock:
            while self._snapshots:  # oldest first: drop the expired ones from the front
                oldest = next(iter(self._snapshots.values()))
                if now - oldest.created <= self.settings.snapshot_seconds:
                    break
                self._snapshots.popitem(last=False)
            found = self._snapshots.get(query.feed_id) if query.feed_id else None
        if found is not None and (found.shallow is None or query.sort is not None or found.nearest is None or
                                  len(found.nearest.rows) >= self._depth(query, found.shallow)):
            return query.feed_id, found  # a deeper page of a shallow snapshot extends it below
        view = self.view()
        if found is not None:  # the same ranking, rules and sources; only the personal list goes deeper
            shallow = found.shallow
            nearest, complete = self._nearest_source(shallow, view, found.prior(lambda: self.live.ranked().prior),
                                                     found.catalogue.sources.merch, self._depth(query, shallow),
                                                     found.nearest)
            snap = replace(found, nearest=nearest, shallow=None if complete else shallow)
            feed_id = query.feed_id
        else:
            snap = self._new_snapshot(query, personal, view, now)
            feed_id = secrets.token_urlsafe(9)
        return self._keep(feed_id, snap), snap

    def _new_snapshot(self, query: FeedQuery, personal: Personal | None, view: CatalogView, now: float) -> Snapshot:
        ranking = self.live.ranked()
        merch = self.compiled(view)
        catalogue = self._sources_of(ranking, merch)
        purchased = personal.purchased if personal is not None and self.settings.exclude_purchased else None
        shallow, nearest = None, None
        if personal is not None and personal.vector is not None and query.sort is None:
            found, complete = self._nearest_source(personal, view, ranking.prior, merch, self._depth(query, personal))
            if len(found.rows):
                nearest, shallow = found, None if complete else personal
        return Snapshot(catalogue, nearest, purchased or NO_IDS, now, shallow)

    def reissue(self, feed_id: str) -> str | None:
        """A new feed_id continuing the snapshot of `feed_id` (a cached page 1 answered again), or None when that
        snapshot expired or is no longer what a new feed is computed from (another popularity ranking or rule set)."""
        with self._lock:
            snap = self._snapshots.get(feed_id)
        if snap is None or snap.catalogue is not self._sources_of(self.live.ranked(), self.compiled(self.view())):
            return None
        return self._keep(secrets.token_urlsafe(9), replace(snap, created=time.monotonic()))

    def _keep(self, feed_id: str, snap: Snapshot) -> str:
        with self._lock:
            self._snapshots[feed_id] = snap
            while len(self._snapshots) > self.settings.snapshot_max:
                self._snapshots.popitem(last=False)
        return feed_id

    def feed(self, query: FeedQuery, personal: Personal | None = None) -> FeedPage:
        feed_id, snap = self._snapshot(query, personal)
        try:
            return self._page(query, feed_id, snap)
        except Beyond:  # deeper than a superseded snapshot keeps: answered as an expired feed_id is
            with self._lock:
                self._snapshots.pop(feed_id, None)
            feed_id, snap = self._snapshot(replace(query, feed_id=None), personal)
            return self._page(query, feed_id, snap)

    def _page(self, query: FeedQuery, feed_id: str, snap: Snapshot) -> FeedPage:
        view = self.view()
        sources = snap.sources()
        selection = Selection.of(view, query, snap.purchased, sources.merch.hidden)
        start, end = query.span
        personalized = query.sort is None and sources.nearest is not None
        if query.sort is not None:  # the shopper's own order: hidden products stay out, no pins, no diversity
            popular = sources.popular  # the price order is today's; so are the scores once it holds only a head
            if popular.kept is not None:
                popular = self._sources_of(self.live.ranked(), self.compiled(view)).sources.popular
            if query.min_score is not None:
                selection = selection.within(np.flatnonzero(popular.row_scores() >= query.min_score))
            order, rank = self.live.price_order(view, query.sort == "price_asc")
            rows = selection.head(order, end, rank)[start:]
            chosen = list(zip(rows.tolist(), popular.score_of(rows).tolist(), ["price"] * len(rows), strict=True))
            total, ordering = selection.total, query.sort
        else:
            chosen, total = ranked_page(sources, query, selection, self._diversity(view))
            ordering = "personal" if personalized else "popular"
        items, products = picks(view, chosen, sources, query.explain)
        return FeedPage(items, query.page, query.per_page, total, ordering, products, feed_id, personalized)

    def _diversity(self, view: CatalogView) -> Diversity:
        column = view.brand_all if self.settings.diversity_by == "brand" else view.path_all

        def keys(rows: list[int]) -> list[object]:
            return column[np.asarray(rows, np.int64)].tolist()

        return Diversity(self.settings.max_in_row, keys)
