"""Scorers for evaluation: the baselines a trained tower must beat, and the tower itself.

Each is built from training-period interactions only and answers `scores(customers, at) -> (C, N)`
(the `evaluation.Scorer` protocol).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from appliance.interactions import Interactions, expand_ranges, history_inputs, seen_matrix
from appliance.ranking import cold_popularity, cold_slotted, popularity_prior
from appliance.tower import UserTower, mean_vector, user_vectors
from appliance.types import EVENT_NAMES


def event_popularity(
    interactions: Interactions, weights: Mapping[str, float], half_life_hours: float, now: float | None = None
) -> np.ndarray:
    """(E,) each event's share of its product's popularity: weights[kind] * 2 ** (-(now - ts) / half_life)."""
    if not len(interactions):
        return np.zeros(0)
    now = float(interactions.ts.max()) if now is None else now
    kind_weight = np.array([weights[name] for name in EVENT_NAMES])
    age_hours = np.clip(now - interactions.ts, 0.0, None) / 3600.0
    return kind_weight[interactions.kind] * np.exp2(-age_hours / half_life_hours)


def popularity_scores(
    interactions: Interactions, n_items: int, weights: Mapping[str, float], half_life_hours: float,
    now: float | None = None,
) -> np.ndarray:
    """(N,) event-weighted, time-decayed popularity (the feed's definition), as of `now` (default: last event)."""
    w = event_popularity(interactions, weights, half_life_hours, now)
    return np.bincount(interactions.item, weights=w, minlength=n_items).astype(np.float64)


class PopularityScorer:
    """The same list for everyone: popularity as of the last training event (all-time with an infinite half-life)."""

    def __init__(
        self, train: Interactions, n_items: int, weights: Mapping[str, float], half_life_hours: float,
        name: str = "popularity",
    ) -> None:
        self.name = name
        self.popularity = popularity_scores(train, n_items, weights, half_life_hours).astype(np.float32)

    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(customers), len(self.popularity))).copy()


class RecentPopularityScorer:
    """What a live feed's popular list would have shown each customer: time-decayed popularity as of the
    customer's own moment `at`, from the training events strictly before it.

    Exact and fast on long logs: popularity is kept at `SNAPSHOT_FLOATS / N` evenly spaced moments of the
    data's span; a query decays the snapshot just before it and adds the few events since."""

    SNAPSHOT_FLOATS = 20_000_000  # (moments, N) float32: 80 MB at most

    def __init__(
        self, train: Interactions, n_items: int, weights: Mapping[str, float], half_life_hours: float,
        name: str = "popularity_recent",
    ) -> None:
        order = np.argsort(train.ts, kind="stable")
        self.ts, self.item = train.ts[order], train.item[order]
        self.weight = np.array([weights[n] for n in EVENT_NAMES])[train.kind[order]]
        self.n_items, self.half_life, self.name = n_items, half_life_hours * 3600.0, name
        first, last = (self.ts[0], self.ts[-1]) if len(self.ts) else (0.0, 0.0)
        count = max(1, min(self.SNAPSHOT_FLOATS // max(n_items, 1), len(self.ts)))
        self.moments = first + np.arange(count) * ((last - first) / count)  # (K,) moments[0]: nothing before
        self.starts = np.searchsorted(self.ts, self.moments, side="left")  # (K,) first event at or after each
        self.first_seen = np.full(n_items, np.inf)  # (N,) each product's first event
        np.minimum.at(self.first_seen, self.item, self.ts)
        self._cold: dict[float, np.ndarray] = {}  # quantile -> (K, 1) cold popularity of each snapshot
        self.snapshots = np.zeros((count, n_items), dtype=np.float32)
        current = np.zeros(n_items)
        for k in range(1, count):
            lo, hi = self.starts[k - 1], self.starts[k]
            current = current * self._decay(self.moments[k] - self.moments[k - 1]) + np.bincount(
                self.item[lo:hi], self.weight[lo:hi] * self._decay(self.moments[k] - self.ts[lo:hi]), n_items)
            self.snapshots[k] = current

    def _decay(self, seconds: np.ndarray | float) -> np.ndarray:
        return np.exp2(-np.asarray(seconds) / self.half_life)

    def known(self, at: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """(C, N) bool: products with an event strictly before each moment `at` (C,) (the others are cold), or
        (C, K) of the products `columns` (K,) only."""
        first_seen = self.first_seen if columns is None else self.first_seen[columns]
        return first_seen[None, :] < np.asarray(at, dtype=np.float64)[:, None]

    def cold(self, at: np.ndarray, quantile: float) -> np.ndarray:
        """(C, 1) `ranking.cold_popularity` at each moment: taken at the snapshot just before it (the known
        products' order does not change under a common decay), so a batch needs no sort of whole rows."""
        if quantile <= 0.0:
            return np.zeros((len(at), 1))
        if quantile not in self._cold:
            known = self.first_seen[None, :] < self.moments[:, None]  # (K, N)
            self._cold[quantile] = cold_popularity(self.snapshots, known, quantile)  # (K, 1)
        at = np.asarray(at, dtype=np.float64)
        k = np.clip(np.searchsorted(self.moments, at, side="right") - 1, 0, len(self.moments) - 1)  # (C,)
        return self._cold[quantile][k] * self._decay(np.maximum(at - self.moments[k], 0.0))[:, None]

    def prior(
        self, customers: np.ndarray, at: np.ndarray, cold_quantile: float, columns: np.ndarray | None = None
    ) -> np.ndarray:
        """(C, N) `ranking.popularity_prior` as of each moment, cold products at `cold(at, cold_quantile)`, or
        (C, K) of the products `columns` (K,) only (the cold value stays the whole catalog's)."""
        scores = self.scores(customers, at, columns)
        if cold_quantile <= 0.0:
            return popularity_prior(scores)
        return popularity_prior(scores, self.known(at, columns), self.cold(at, cold_quantile))

    def prior_of(self, at: np.ndarray, items: np.ndarray, cold_quantile: float) -> np.ndarray:
        """(C,) `prior` of one product `items` (C,) per moment `at` (C,): that column alone."""
        scores = self.score_of(at, items)
        if cold_quantile <= 0.0:
            return popularity_prior(scores)
        known = self.first_seen[items] < np.asarray(at, dtype=np.float64)
        return popularity_prior(scores, known, self.cold(at, cold_quantile)[:, 0])

    def scores(self, customers: np.ndarray, at: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """(C, N) float32 popularity as of each moment `at` (C,), or (C, K) of the products `columns` (K,) only
        (the same values: a snapshot cell decayed, then the sum of its events since added)."""
        k, decay, owner, event = self._since_snapshot(at)
        decay = decay.astype(np.float32)[:, None]  # the snapshots' precision: float64 passes cost 2-3x
        if columns is None:
            out = self.snapshots[k] * decay
            cells, weight = owner * self.n_items + self.item[event], self._event_weight(at, owner, event)
        else:  # one gather of the (C, K) cells asked for (not C whole rows); other products' events dropped
            where = np.full(self.n_items, -1)
            where[columns] = np.arange(len(columns))
            position = where[self.item[event]]
            kept = position >= 0
            owner, event = owner[kept], event[kept]
            out = self.snapshots.take(k[:, None] * self.n_items + columns[None, :]) * decay  # (C, K)
            cells, weight = owner * len(columns) + position[kept], self._event_weight(at, owner, event)
        cells, slot = np.unique(cells, return_inverse=True)  # each cell's events summed first, then added
        out.reshape(-1)[cells] += np.bincount(slot.reshape(-1), weight, len(cells)).astype(np.float32)
        return out

    def score_of(self, at: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(C,) popularity of one product `items` (C,) per moment `at` (C,): `scores` at that column alone."""
        k, decay, owner, event = self._since_snapshot(at)
        same = self.item[event] == items[owner]
        owner, event = owner[same], event[same]
        added = np.bincount(owner, self._event_weight(at, owner, event), len(k)).astype(np.float32)
        return self.snapshots[k, items] * decay.astype(np.float32) + added

    def _since_snapshot(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per moment: the snapshot just before it (C,), that snapshot's decay to it (C,), and the events between
        them as (owner (S,) into `at`, event (S,) into the sorted log)."""
        at = np.asarray(at, dtype=np.float64)
        k = np.clip(np.searchsorted(self.moments, at, side="right") - 1, 0, len(self.moments) - 1)  # (C,)
        hi = np.searchsorted(self.ts, at, side="left")  # (C,) events strictly before each moment
        lo = np.minimum(self.starts[k], hi)
        owner, event = expand_ranges(lo, hi - lo)
        return k, self._decay(np.maximum(at - self.moments[k], 0.0)), owner, event

    def _event_weight(self, at: np.ndarray, owner: np.ndarray, event: np.ndarray) -> np.ndarray:
        return self.weight[event] * self._decay(np.asarray(at, dtype=np.float64)[owner] - self.ts[event])


class CooccurrenceScorer:
    """Item-to-item: customers who interacted with X also interacted with Y.

    score(c, y) = sum over distinct items x in c's history of #customers who interacted with both x and y;
    computed as (H X^T) X with X the sparse customer-by-item matrix, never materialising the N x N matrix.
    """

    name = "cooccurrence"

    def __init__(self, train: Interactions, n_items: int) -> None:
        self.train = train
        self.n_items = n_items
        pairs = np.unique(np.stack([train.customer, train.item], axis=1), axis=0)  # (P, 2) distinct pairs
        _, user_row = np.unique(pairs[:, 0], return_inverse=True)
        n_users = int(user_row.max()) + 1 if len(pairs) else 0
        index = torch.as_tensor(np.stack([user_row.reshape(-1), pairs[:, 1]]), dtype=torch.long)
        ones = torch.ones(len(pairs))
        self.x = torch.sparse_coo_tensor(index, ones, (n_users, n_items), check_invariants=True)  # (U, N)
        self.xt = torch.sparse_coo_tensor(index.flip(0), ones, (n_items, n_users), check_invariants=True)

    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        history = torch.as_tensor(seen_matrix(self.train, customers, self.n_items, before=at), dtype=torch.float32)
        overlap = self.x @ history.T  # (U, C): items each other customer shares with each asked one
        return (self.xt @ overlap).T.numpy()  # (C, N)


class MeanVectorScorer:
    """No training: cosine to the event-weighted, recency-decayed mean of recent product vectors."""

    name = "mean_vector"

    def __init__(
        self, train: Interactions, item_vectors: np.ndarray, weights: Mapping[str, float], history: int,
        half_life_hours: float,
    ) -> None:
        self.train, self.item_vectors = train, item_vectors
        self.weights, self.history, self.half_life_hours = weights, history, half_life_hours

    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        vectors, kinds, ages, mask = history_inputs(self.train, self.item_vectors, customers, at, self.history)
        users = mean_vector(vectors, kinds, ages, mask, self.weights, self.half_life_hours)  # (C, D)
        return users @ self.item_vectors.T


class TowerScorer:
    """The trained user tower: cosine between its user vector and every product vector, plus its learned
    popularity prior over `popularity`: (N,) the training period's at its end (as the feed would have it then),
    or a scorer of popularity as of each customer's moment (`RecentPopularityScorer`: as the feed had it then);
    then products without events at the tower's `cold_share` of the first `depth` places (`ranking.cold_slots`,
    as the feed serves them, best first by the tower's cosine, or with `cold_by_text` by its text side: the
    residual mean's; `cold_share` 0 ranks by the score alone). `targets` (N, D): the product vectors
    retrieved against, when they differ from the history's text vectors (`appliance.item_side`)."""

    def __init__(
        self, model: UserTower, train: Interactions, item_vectors: np.ndarray,
        popularity: np.ndarray | RecentPopularityScorer, name: str = "tower", cold_share: float | None = None,
        depth: int = 100, targets: np.ndarray | None = None, cold_by_text: bool = False,
    ) -> None:
        self.model, self.train, self.item_vectors, self.name = model, train, item_vectors, name
        self.popularity, self.depth = popularity, depth
        self.targets = item_vectors if targets is None else targets  # the vectors retrieved against
        self.cold_share = float(model.cold_share) if cold_share is None else cold_share
        self.cold_by_text = cold_by_text  # True (an ablation): the slots ranked by the tower's text side

    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        length = self.model.config.history
        vectors, kinds, ages, mask = history_inputs(self.train, self.item_vectors, customers, at, length)
        prior = tower_prior(self.model, self.popularity, customers, at)  # (C or 1, N)
        prior = self.model.popularity_weight.item() * prior
        cosines = user_vectors(self.model, vectors, kinds, ages, mask) @ self.targets.T  # (C, N)
        if self.cold_share <= 0.0:
            return cosines + prior
        scores = np.where(seen_matrix(self.train, customers, len(self.item_vectors), before=at), -np.inf,
                          cosines + prior)  # the feed filters the shopper's products before it interleaves
        text = (user_vectors(self.model, vectors, kinds, ages, mask, attention=False) @ self.targets.T
                if self.cold_by_text else cosines)  # (C, N)
        return cold_slotted(scores, text, self._cold(at), self.cold_share, self.depth)

    def _cold(self, at: np.ndarray) -> np.ndarray:
        """(C or 1, N) bool: products without any event before each moment (at the end of training)."""
        if isinstance(self.popularity, RecentPopularityScorer):
            return ~self.popularity.known(at)
        return (self.popularity <= 0)[None, :]


def tower_prior(
    model: UserTower, popularity: np.ndarray | RecentPopularityScorer, customers: np.ndarray, at: np.ndarray
) -> np.ndarray:
    """(C or 1, N) the `ranking.popularity_prior` a tower ranks with for `customers` (C,) at their moments `at`,
    with its cold_quantile: over popularity as of each moment (a scorer) or one (N,) popularity."""
    quantile = float(model.cold_quantile)
    if isinstance(popularity, RecentPopularityScorer):
        return popularity.prior(customers, at, quantile)
    known = popularity > 0
    return popularity_prior(popularity[None, :], known, cold_popularity(popularity, known, quantile))


def prior_popularity(
    train: Interactions, n_items: int, weights: Mapping[str, float], as_of: str, half_life_hours: float
) -> np.ndarray | RecentPopularityScorer:
    """The popularity a tower's prior ranks with in evaluation, defined as it was trained (`training.prior_as_of`):
    as of each customer's moment, or at the end of the training data."""
    if as_of == "moment":
        return RecentPopularityScorer(train, n_items, weights, half_life_hours)
    return popularity_scores(train, n_items, weights, half_life_hours)


def baseline_scorers(
    train: Interactions, item_vectors: np.ndarray, weights: Mapping[str, float], history: int,
    recency_half_life_hours: float, popularity_half_life_hours: float,
) -> list:
    """The baselines every model is compared with: all-time popularity, recent popularity (the feed's
    half-life, as of each customer's moment), co-occurrence, mean vector."""
    n_items = len(item_vectors)
    return [
        PopularityScorer(train, n_items, weights, math.inf),
        RecentPopularityScorer(train, n_items, weights, popularity_half_life_hours),
        CooccurrenceScorer(train, n_items),
        MeanVectorScorer(train, item_vectors, weights, history, recency_half_life_hours),
    ]
