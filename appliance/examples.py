"""Training examples of the user tower: which events are positives, what history each sees, the popularity
prior it is scored with, and the tensors a batch feeds the tower.

An example is one event of a customer (the positive: a product new to the customer) and the up-to-`history`
events strictly before it (ages measured from the positive's time, so no future leaks in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from appliance.baselines import RecentPopularityScorer, event_popularity
from appliance.interactions import Interactions, expand_ranges, window_rows
from appliance.ranking import cold_popularity, popularity_prior


@dataclass(frozen=True)
class Examples:
    rows: np.ndarray  # (M, T) history rows into the interactions, oldest first, left-padded
    mask: np.ndarray  # (M, T) True for real history slots
    target: np.ndarray  # (M,) row of the positive event

    def take(self, index: np.ndarray) -> Examples:
        return Examples(self.rows[index], self.mask[index], self.target[index])


def make_examples(interactions: Interactions, history: int, window_hours: float = 0.0) -> Examples:
    """Every first (customer, product) interaction with at least one strictly earlier event is an example.

    Its history ends before the first event at the same moment: products bought together in one basket (one
    timestamp) do not see each other, just as the evaluation never shows a model the rest of a held-out basket.
    With `window_hours` > 0 the history keeps only events that recent before the positive, as serving loads it
    (realtime.history_window_hours); an example left without history is dropped.
    """
    starts = interactions.row_starts()  # (E,)
    row = np.arange(len(interactions))
    new_moment = np.r_[True, (interactions.customer[1:] != interactions.customer[:-1])
                       | (interactions.ts[1:] != interactions.ts[:-1])]
    moment_start = np.maximum.accumulate(np.where(new_moment, row, 0))  # (E,) first row of the same instant
    target = np.flatnonzero((moment_start > starts) & interactions.first_of_pair())
    rows, mask = window_rows(moment_start[target], starts[target], history)
    if window_hours > 0:
        mask &= interactions.ts[rows] >= interactions.ts[target][:, None] - window_hours * 3600.0
        keep = mask.any(1)
        rows, mask, target = np.where(mask, rows, 0)[keep], mask[keep], target[keep]
    return Examples(rows, mask, target)


def split_validation(
    examples: Examples, interactions: Interactions, fraction: float, rng: np.random.Generator, limit: int
) -> tuple[Examples, Examples]:
    """A random `fraction` of customers (at most `limit`) gives its last example to validation (only customers
    with two or more)."""
    owner = interactions.customer[examples.target]  # (M,) sorted, as targets are
    customers, first, counts = np.unique(owner, return_index=True, return_counts=True)
    last = first + counts - 1
    eligible = np.flatnonzero(counts >= 2)
    n_val = min(int(round(fraction * len(customers))), len(eligible), limit)
    chosen = last[rng.choice(eligible, size=n_val, replace=False)] if n_val else np.zeros(0, dtype=np.int64)
    is_val = np.zeros(len(owner), dtype=bool)
    is_val[chosen] = True
    return examples.take(~is_val), examples.take(is_val)


class PopularityPrior:
    """log(1 + popularity) of every product as seen by an example: the training data's popularity at its end,
    minus the contribution of the example's own customer. With a `cold_quantile` (`set_cold_quantile`), a product
    without events (or only the customer's own) takes the shop's cold value (`ranking.popularity_prior`)."""

    def __init__(
        self, interactions: Interactions, n_items: int, weights: Mapping[str, float], half_life_hours: float
    ) -> None:
        event_weight = event_popularity(interactions, weights, half_life_hours)  # (E,)
        self.total = np.bincount(interactions.item, weights=event_weight, minlength=n_items)  # (N,)
        self.cold_quantile, self.cold_value = 0.0, 0.0  # set_cold_quantile
        self.base = torch.as_tensor(popularity_prior(self.total), dtype=torch.float32)  # (N,)
        # each customer's own popularity per product, as (customer, product) pairs sorted by customer
        self.customers, starts, ends = interactions.bounds()
        owner = np.repeat(np.arange(len(self.customers)), ends - starts)
        pairs, inverse = np.unique(owner * n_items + interactions.item, return_inverse=True)
        self.pair_key, self.pair_item = pairs, pairs % n_items  # (P,) customer position * N + product, sorted
        self.pair_own = np.bincount(inverse.reshape(-1), weights=event_weight)  # (P,)
        self.pair_start = np.searchsorted(pairs // n_items, np.arange(len(self.customers) + 1))  # (C + 1,)
        self.interactions = interactions

    def set_cold_quantile(self, cold_quantile: float) -> None:
        self.cold_quantile = cold_quantile
        self.cold_value = float(cold_popularity(self.total, self.total > 0, cold_quantile)[0])
        self.base = torch.as_tensor(popularity_prior(self.total, self.total > 0, self.cold_value), dtype=torch.float32)

    def _own_left_out(self, item: np.ndarray, pair: np.ndarray) -> torch.Tensor:
        rest = self.total[item] - self.pair_own[pair]
        return torch.as_tensor(popularity_prior(rest, rest > 0, self.cold_value), dtype=torch.float32)

    def rows(self, ex: Examples, columns: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) float32 prior per example over the products `columns` (K,) (None: all N), the shop's,
        corrected where the example's customer contributed."""
        customer = np.searchsorted(self.customers, self.interactions.customer[ex.target])  # (B,)
        first = self.pair_start[customer]
        owner, pair = expand_ranges(first, self.pair_start[customer + 1] - first)
        item = self.pair_item[pair]
        base = self.base
        if columns is not None:  # keep the customer's pairs among the columns, as column positions
            where = np.full(len(self.base), -1)
            where[columns.numpy()] = np.arange(len(columns))
            kept = where[item] >= 0
            owner, pair, item = owner[kept], pair[kept], item[kept]
            base, position = self.base[columns], where[item]
        else:
            position = item
        prior = base.expand(len(customer), -1).clone()
        prior[owner, position] = self._own_left_out(item, pair)
        return prior

    def is_cold(self, ex: Examples) -> np.ndarray:
        """(B,) bool: the example's positive has no event but its own customer's."""
        customer = np.searchsorted(self.customers, self.interactions.customer[ex.target])  # (B,)
        item = self.interactions.item[ex.target]
        pair = np.searchsorted(self.pair_key, customer * len(self.base) + item)
        return self.total[item] - self.pair_own[pair] <= 0

    def positive(self, ex: Examples) -> torch.Tensor:
        """(B,) float32 prior of each example's own positive product, its customer's contribution left out."""
        customer = np.searchsorted(self.customers, self.interactions.customer[ex.target])  # (B,)
        item = self.interactions.item[ex.target]
        pair = np.searchsorted(self.pair_key, customer * len(self.base) + item)  # the pair exists: it is the positive
        return self._own_left_out(item, pair)


class MomentPrior:
    """log(1 + popularity) of every product as the feed had it at each example's moment: the events strictly
    before the positive's time, decayed from it (so a long log's early examples see their own time's popular
    products, and the customer's own earlier events count, as they do in serving). Products without any event
    before that moment are cold (`ranking.popularity_prior`, with this prior's `cold_quantile`)."""

    def __init__(
        self, interactions: Interactions, n_items: int, weights: Mapping[str, float], half_life_hours: float
    ) -> None:
        self.popularity = RecentPopularityScorer(interactions, n_items, weights, half_life_hours)
        self.interactions = interactions
        self.cold_quantile = 0.0

    def set_cold_quantile(self, cold_quantile: float) -> None:
        self.cold_quantile = cold_quantile

    def rows(self, ex: Examples, columns: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) float32 prior per example over the products `columns` (K,) (None: all N)."""
        customer, at = self.interactions.customer[ex.target], self.interactions.ts[ex.target]
        prior = self.popularity.prior(customer, at, self.cold_quantile, None if columns is None else columns.numpy())
        return torch.from_numpy(np.asarray(prior, dtype=np.float32))

    def is_cold(self, ex: Examples) -> np.ndarray:
        """(B,) bool: the example's positive had no event before its moment (a new product then)."""
        return self.popularity.first_seen[self.interactions.item[ex.target]] >= self.interactions.ts[ex.target]

    def positive(self, ex: Examples) -> torch.Tensor:
        """(B,) float32 prior of each example's own positive product at its moment."""
        at, item = self.interactions.ts[ex.target], self.interactions.item[ex.target]
        return torch.as_tensor(self.popularity.prior_of(at, item, self.cold_quantile), dtype=torch.float32)


def batch_inputs(ex: Examples, interactions: Interactions, item_vectors: torch.Tensor):
    """Tensors for the tower: vectors (B, T, D), kinds (B, T), age_hours (B, T), mask (B, T).

    A padded slot holds the vector of interaction row 0's product (zeroing it would cost a pass over (B, T, D)):
    the tower gives padded slots no weight, so it never sees them."""
    rows = torch.as_tensor(ex.rows)
    mask = torch.as_tensor(ex.mask)
    items = torch.as_tensor(interactions.item)[rows]  # (B, T)
    vectors = item_vectors.index_select(0, items.reshape(-1)).view(*items.shape, -1)  # (B, T, D)
    kinds = torch.as_tensor(interactions.kind)[rows] * mask
    ts = torch.as_tensor(interactions.ts)
    ages = ((ts[torch.as_tensor(ex.target)][:, None] - ts[rows]) / 3600.0) * mask  # (B, T)
    return vectors, kinds, ages.float(), mask
