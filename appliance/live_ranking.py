"""The catalog view the feeds rank over and its current ranking, kept live (appliance/recommender.py merges the
feeds' candidate sources over them).

The view is loaded once and then patched in place on every product change (`apply_changes`), so no feed ever
waits on a reload; popularity is recomputed in the background every `popularity_ttl_seconds` while the previous
ranking keeps serving; the price orders are computed once per version of the view.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.ranking import Ranking, ServingPrior, price_ranking, rank_rows
from appliance.threads import Threads
from appliance.types import Product


class LiveRanking:
    """The catalog view, patched in place, and its popularity ranking, refreshed in the background."""

    def __init__(
        self,
        load_catalog: Callable[[], Sequence[Product]],
        load_popularity: Callable[[datetime], tuple[np.ndarray, np.ndarray]],
        clock: Callable[[], datetime],
        popularity_ttl_seconds: float,
        new_arrival_days: float,
        load_prior: Callable[[datetime], tuple[np.ndarray, np.ndarray, float, float]] | None = None,
    ) -> None:
        """`load_popularity(now)` is the feed's (ids, popularity); `load_prior(now)` the serving tower's (ids,
        popularity with its trained half-life, cold quantile, cold share), None: the feed's popularity, neither."""
        self._load_catalog = load_catalog
        self._load_popularity = load_popularity
        self._load_prior = load_prior
        self._clock = clock
        self._ttl = popularity_ttl_seconds
        self._new_days = new_arrival_days
        self._lock = threading.Lock()  # guards `_refreshing` (held briefly)
        self._patch = threading.Lock()  # one catalog patch or popularity computation at a time
        self._view: CatalogView | None = None
        self._ranking: Ranking | None = None
        self._refreshing = False
        self._threads = Threads("recommender")  # the background popularity refresh
        self._prices: dict[bool, tuple[int, np.ndarray, np.ndarray]] = {}  # ascending -> (version, order, rank)

    def view(self) -> CatalogView:
        view = self._view
        if view is None:
            with self._patch:
                if self._view is None:
                    self._view = CatalogView(self._load_catalog())
                view = self._view
        return view

    def loaded(self) -> bool:
        """Whether the view and a ranking are loaded (a feed then needs no catalog or popularity read)."""
        return self._view is not None and self._ranking is not None

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
                self._ranking = rank_rows(view, popularity, now, self._new_days, ranking.at, ranking.prior)

    def refresh(self) -> Ranking:
        """Recompute popularity now and rank every row by it."""
        view = self.view()
        now = self._clock()
        ids, scores = self._load_popularity(now)
        prior_ids, prior_scores, *cold = self._load_prior(now) if self._load_prior else (ids, scores, 0.0, 0.0)
        with self._patch:
            popularity, prior = self._per_row(view, ids, scores), self._per_row(view, prior_ids, prior_scores)
            ranking = rank_rows(view, popularity, now.timestamp(), self._new_days, time.monotonic(),
                                ServingPrior.of(prior, *cold))
            self._ranking = ranking
        return ranking

    @staticmethod
    def _per_row(view: CatalogView, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        out = np.zeros(len(view), dtype=np.float64)
        rows, known = view.rows_of_array(np.asarray(ids, dtype=np.int64))
        out[rows] = np.asarray(scores, dtype=np.float64)[known]
        return out

    def ranked(self) -> Ranking:
        """The current ranking; once it is older than the TTL, one background thread computes the next."""
        ranking = self._ranking
        if ranking is None:
            return self.refresh()
        if time.monotonic() - ranking.at >= self._ttl:
            with self._lock:
                start, self._refreshing = not self._refreshing, True
            if start and not self._threads.start(self._refresh_in_background, "popularity"):
                self._refreshing = False  # closed: the ranking in hand keeps serving
        return ranking

    def close(self, timeout: float = 10.0) -> None:
        """Start no more background refreshes; wait up to `timeout` s for one in progress."""
        self._threads.close(timeout)

    def _refresh_in_background(self) -> None:
        try:
            self.refresh()
        finally:
            self._refreshing = False

    def price_order(self, view: CatalogView, ascending: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows by price (unpriced last, then id) and each row's position in that order, for this view's version."""
        cached = self._prices.get(ascending)
        if cached is not None and cached[0] == view.version:
            return cached[1], cached[2]
        version = view.version
        order, rank = price_ranking(view, ascending)
        self._prices[ascending] = (version, order, rank)
        return order, rank
