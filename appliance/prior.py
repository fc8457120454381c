"""Choosing the tower's popularity prior on validation: its weight and where products without events rank.

The ranking score is cosine + popularity_weight * `ranking.popularity_prior`, cold products (no event before
the moment) at `ranking.cold_popularity` with the tower's `cold_quantile`. Before training, both are picked on
the validation examples from a grid. Maximising the overall NDCG@10 alone would always leave new products at
the bottom (they are rarer positives than the popular ones), so the rule is: among the grid points whose overall
validation NDCG@10 is within `COLD_TOLERANCE` of the best one's, the one with the best NDCG@10 on the validation
examples whose positive was cold; ties go to the overall NDCG@10, then to the smaller weight and quantile.
(Measured in BENCHMARKS.md: a rule that accepted any point not significantly below the best, by a paired
bootstrap on validation, gave up too much of the overall NDCG@10 on test.)

Last, for the tower training keeps, `choose_cold_share` picks the share of the list's places that products without
events take by similarity alone (`ranking.cold_slots`, the feed's personal order and the evaluation's tower row):
by default the largest share whose overall validation NDCG@10 is within `COLD_TOLERANCE` of the best share's
("room"; the tower orders new products about as well as the mean vector does, what keeps them from a top 10 is
the prior's room, and a few dozen cold validation examples rank the shares by chance; BENCHMARKS.md "Cold-start,
seventh round"), or the module's rule above ("cold"); never below a floor the shop sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from appliance.evaluation import ranking_metrics
from appliance.examples import Examples, MomentPrior, PopularityPrior, batch_inputs
from appliance.interactions import Interactions, expand_ranges
from appliance.ranking import cold_slotted_each
from appliance.tower import UserTower

PRIOR_GRID = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)  # popularity weights tried before training (cosine units)
COLD_QUANTILES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)  # where a product without events ranks among the known
COLD_TOLERANCE = 0.02  # share of the best overall validation NDCG@10 the cold-start choice may give up
COLD_SHARES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)  # parts of the list given to products without events (cold slots)
CHOICE_DEPTH = 10  # places the choice looks at: by NDCG@10, and the first 10 places of `cold_slots` at any depth
# are its list of 10 (`interleave` takes each list's first rows), so a choice over 10 places is the choice over 100


def _chunks(model: UserTower, val: Examples, interactions: Interactions, item_vectors: torch.Tensor, chunk: int,
            targets: torch.Tensor | None = None):
    """Per chunk of validation examples: (its slice, its examples, cosines (c, N) to every product (to `targets`,
    the vectors retrieved against, when they differ from the history's), the (row, product) pairs to exclude
    (the customer's earlier products), the positives (c, 1))."""
    starts = interactions.row_starts()
    targets = item_vectors if targets is None else targets
    for i in range(0, len(val.target), chunk):
        ex = val.take(slice(i, i + chunk))
        cosines = (model(*batch_inputs(ex, interactions, item_vectors)) @ targets.T).numpy()  # (c, N)
        owner, earlier = expand_ranges(starts[ex.target], ex.target - starts[ex.target])  # the earlier events
        relevant = interactions.item[ex.target][:, None]
        yield slice(i, i + chunk), ex, cosines, (owner, interactions.item[earlier]), relevant


@torch.no_grad()
def scored_validation(
    model: UserTower, val: Examples, interactions: Interactions, item_vectors: torch.Tensor,
    prior: PopularityPrior | MomentPrior | None, targets: torch.Tensor | None = None, chunk: int = 256,
):
    """Per chunk of validation examples, ranked as the tower ranks (cosine + its weight x its prior, the earlier
    products at -inf): (slice, examples, scores (c, N), cosines (c, N), positives (c, 1))."""
    was_training = model.training
    model.eval()
    weight = model.popularity_weight.item()
    if prior is not None:
        prior.set_cold_quantile(float(model.cold_quantile))
    for sl, ex, cosines, excluded, relevant in _chunks(model, val, interactions, item_vectors, chunk, targets):
        scores = cosines + weight * prior.rows(ex).numpy() if prior is not None and weight else cosines.copy()
        scores[excluded] = -np.inf
        yield sl, ex, scores, cosines, relevant
    model.train(was_training)


def ndcg_at_10(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    return ranking_metrics(scores, relevant, np.ones_like(relevant, bool), (10,))["ndcg@10"]


@torch.no_grad()
def validation_grid(
    model: UserTower, val: Examples, interactions: Interactions, item_vectors: torch.Tensor,
    prior: PopularityPrior | MomentPrior | None, grid: Sequence[tuple[float, float]], chunk: int = 256,
) -> np.ndarray:
    """(G, V) NDCG@10 of each validation example's positive over the full catalog (the customer's earlier
    products excluded) for each (popularity weight, cold quantile) of `grid`; user vectors computed once."""
    was_training = model.training
    model.eval()
    quantiles = sorted({q for _, q in grid})
    out = np.zeros((len(grid), len(val.target)))
    for sl, ex, cosines, excluded, relevant in _chunks(model, val, interactions, item_vectors, chunk):
        for q in quantiles:
            popularity = np.zeros_like(cosines)
            if prior is not None:
                prior.set_cold_quantile(q)
                popularity = prior.rows(ex).numpy()  # (c, N)
            for g, (weight, quantile) in enumerate(grid):
                if quantile != q:
                    continue
                scores = cosines + weight * popularity if weight else cosines.copy()
                scores[excluded] = -np.inf
                out[g, sl] = ndcg_at_10(scores, relevant)
    model.train(was_training)
    return out


def choose_prior(
    model: UserTower, val: Examples, interactions: Interactions, item_vectors: torch.Tensor,
    prior: PopularityPrior | MomentPrior | None, cold_start: bool = True, weights: Sequence[float] = PRIOR_GRID,
) -> float:
    """Set the tower's popularity weight (one of `weights`) and cold quantile by the module's rule (and the
    prior's quantile to match; `cold_start` False keeps the quantile 0); returns the overall validation NDCG@10
    of the choice. Training calls it before the first epoch and once more with the trained weight alone, since
    training moves the weight (and the network) that the first choice of quantile was made for."""
    quantiles = COLD_QUANTILES if cold_start else (0.0,)
    grid = [(w, q) for w in weights for q in quantiles] if prior is not None else [(0.0, 0.0)]
    rows = validation_grid(model, val, interactions, item_vectors, prior, grid)  # (G, V)
    chosen = _by_rule(rows, _cold_positives(val, prior), [(-w, -q) for w, q in grid])
    weight, quantile = grid[chosen]
    with torch.no_grad():
        model.popularity_weight.fill_(weight)
        model.cold_quantile.fill_(quantile)
    if prior is not None:
        prior.set_cold_quantile(quantile)
    return float(rows[chosen].mean())


@torch.no_grad()
def choose_cold_share(
    model: UserTower, val: Examples, interactions: Interactions, item_vectors: torch.Tensor,
    prior: PopularityPrior | MomentPrior | None, shares: Sequence[float] = COLD_SHARES, chunk: int = 256,
    rule: str = "room", minimum: float = 0.0,
) -> list[tuple[float, float, float]]:
    """Set the tower's `cold_share` (one of `shares`: the part of the list's places `ranking.cold_slots` gives
    products without events, by similarity alone), with the tower's own prior, by `rule` ("room": the largest
    share within `COLD_TOLERANCE` of the best overall validation NDCG@10; "cold": the module's rule), among the
    shares of at least `minimum` (the smallest of them when none is within the tolerance); returns (share,
    overall validation NDCG@10, NDCG@10 of the examples whose positive was cold) of every share tried, the chosen
    one first. Training calls it last, for the tower it keeps (its report keeps these rows)."""
    rows = np.zeros((len(shares), len(val.target)))
    for sl, ex, scores, cosines, relevant in scored_validation(model, val, interactions, item_vectors, prior,
                                                               chunk=chunk):
        slotted = cold_slotted_each(scores, cosines, _cold_products(ex, interactions, prior), shares, CHOICE_DEPTH)
        for g, ranked in enumerate(slotted):
            rows[g, sl] = ndcg_at_10(ranked, relevant)
    cold = _cold_positives(val, prior)
    chosen = pick_cold_share(rows, cold, shares, rule, minimum)
    model.cold_share.fill_(shares[chosen])
    on_cold = rows[:, cold].mean(1) if cold.any() else np.zeros(len(shares))
    tried = [(float(share), float(rows[g].mean()), float(on_cold[g])) for g, share in enumerate(shares)]
    return [tried[chosen]] + tried[:chosen] + tried[chosen + 1:]


def pick_cold_share(rows: np.ndarray, cold: np.ndarray, shares: Sequence[float], rule: str, minimum: float) -> int:
    """`choose_cold_share`'s choice over (S, V) validation NDCG@10 rows (one per share) and the `cold` (V,)
    examples: the index of the share chosen by `rule` among those of at least `minimum`."""
    overall = rows.mean(1)
    allowed = [g for g, share in enumerate(shares) if share >= minimum] or [int(np.argmax(shares))]
    within = [g for g in allowed if overall[g] >= overall.max() * (1.0 - COLD_TOLERANCE)]
    if not within:
        return min(allowed, key=shares.__getitem__)
    if rule == "cold":
        return _by_rule(rows, cold, [(-share,) for share in shares], allowed)
    return max(within, key=shares.__getitem__)


def _by_rule(rows: np.ndarray, cold: np.ndarray, tie_breaks: Sequence[tuple[float, ...]],
             among: Sequence[int] | None = None) -> int:
    """The module's rule over (G, V) validation NDCG@10 rows: among the rows (of `among`, default all) whose mean
    is within `COLD_TOLERANCE` of the best one's, the best on the `cold` (V,) examples; then the best overall,
    then `tie_breaks` (higher first)."""
    overall = rows.mean(1)
    on_cold = rows[:, cold].mean(1) if cold.any() else np.zeros(len(rows))
    floor = overall.max() * (1.0 - COLD_TOLERANCE)
    eligible = [g for g in (range(len(rows)) if among is None else among) if overall[g] >= floor]
    return max(eligible, key=lambda g: (on_cold[g], overall[g], *tie_breaks[g]))


def _cold_positives(val: Examples, prior: PopularityPrior | MomentPrior | None) -> np.ndarray:
    return prior.is_cold(val) if prior is not None else np.zeros(len(val.target), bool)


def _cold_products(ex: Examples, interactions: Interactions, prior: PopularityPrior | MomentPrior | None
                   ) -> np.ndarray:
    """(B or 1, N) bool: products without any event as each example sees them (none without a prior)."""
    if isinstance(prior, MomentPrior):
        return ~prior.popularity.known(interactions.ts[ex.target])
    if isinstance(prior, PopularityPrior):
        return (prior.total <= 0)[None, :]
    return np.zeros((1, 1), bool)  # broadcasts over every product
