"""Choosing the tower's popularity prior on validation: its weight and where products without events rank.

The ranking score is cosine + popularity_weight * `ranking.popularity_prior`, cold products (no event before
the moment) at `ranking.cold_popularity` with the tower's `cold_quantile`. Before training, both are picked on
the validation examples from a grid. Maximising the overall NDCG@10 alone would always leave new products at
the bottom (they are rarer positives than the popular ones), so the rule is: among the grid points whose overall
validation NDCG@10 is within `COLD_TOLERANCE` of the best one's, the one with the best NDCG@10 on the validation
examples whose positive was cold; ties go to the overall NDCG@10, then to the smaller weight and quantile.
(Measured in BENCHMARKS.md: a rule that accepted any point not significantly below the best, by a paired
bootstrap on validation, gave up too much of the overall NDCG@10 on test.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from appliance.evaluation import ranking_metrics
from appliance.examples import Examples, MomentPrior, PopularityPrior, batch_inputs
from appliance.interactions import Interactions, expand_ranges
from appliance.tower import UserTower

PRIOR_GRID = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)  # popularity weights tried before training (cosine units)
COLD_QUANTILES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)  # where a product without events ranks among the known
COLD_TOLERANCE = 0.02  # share of the best overall validation NDCG@10 the cold-start choice may give up


@torch.no_grad()
def validation_grid(
    model: UserTower, val: Examples, interactions: Interactions, item_vectors: torch.Tensor,
    prior: PopularityPrior | MomentPrior | None, grid: Sequence[tuple[float, float]], chunk: int = 256,
) -> np.ndarray:
    """(G, V) NDCG@10 of each validation example's positive over the full catalog (the customer's earlier
    products excluded) for each (popularity weight, cold quantile) of `grid`; user vectors computed once."""
    was_training = model.training
    model.eval()
    starts = interactions.row_starts()
    quantiles = sorted({q for _, q in grid})
    out = np.zeros((len(grid), len(val.target)))
    for i in range(0, len(val.target), chunk):
        ex = val.take(slice(i, i + chunk))
        cosines = (model(*batch_inputs(ex, interactions, item_vectors)) @ item_vectors.T).numpy()  # (c, N)
        owner, earlier = expand_ranges(starts[ex.target], ex.target - starts[ex.target])  # the earlier events
        relevant = interactions.item[ex.target][:, None]  # (c, 1)
        for q in quantiles:
            popularity = np.zeros_like(cosines)
            if prior is not None:
                prior.set_cold_quantile(q)
                popularity = prior.rows(ex).numpy()  # (c, N)
            for g, (weight, quantile) in enumerate(grid):
                if quantile != q:
                    continue
                scores = cosines + weight * popularity if weight else cosines.copy()
                scores[owner, interactions.item[earlier]] = -np.inf
                out[g, i:i + chunk] = ranking_metrics(scores, relevant, np.ones_like(relevant, bool), (10,))["ndcg@10"]
    model.train(was_training)
    return out


def validation_ndcg(
    model: UserTower, val: Examples, interactions: Interactions, item_vectors: torch.Tensor,
    prior: PopularityPrior | MomentPrior | None,
) -> float:
    """Mean validation NDCG@10 of the tower with its own popularity weight and cold quantile."""
    grid = [(model.popularity_weight.item(), float(model.cold_quantile))]
    return float(validation_grid(model, val, interactions, item_vectors, prior, grid).mean())


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
    overall = rows.mean(1)
    cold = prior.is_cold(val) if prior is not None else np.zeros(len(val.target), bool)
    on_cold = rows[:, cold].mean(1) if cold.any() else np.zeros(len(grid))
    floor = overall.max() * (1.0 - COLD_TOLERANCE)
    eligible = [g for g in range(len(grid)) if overall[g] >= floor]
    chosen = max(eligible, key=lambda g: (on_cold[g], overall[g], -grid[g][0], -grid[g][1]))
    weight, quantile = grid[chosen]
    with torch.no_grad():
        model.popularity_weight.fill_(weight)
        model.cold_quantile.fill_(quantile)
    if prior is not None:
        prior.set_cold_quantile(quantile)
    return float(overall[chosen])
