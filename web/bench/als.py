"""implicit's ALS as the bench's collaborative-filtering yardstick, tuned on validation (never on test).

The validation split is carved from the training part the way the tower's is: each customer's last new product
of the training part (`time_split(split.train, holdout)`). A coordinate search over factors, regularisation,
alpha, iterations and the confidence weighting, each point scored by full-ranking NDCG@10 on that split; the
chosen parameters are refitted on the whole training part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from appliance.config_sections import EvaluationConfig
from appliance.evaluation import PROMOTION_METRIC, Split, evaluate, time_split
from appliance.interactions import Interactions
from appliance.types import EVENT_NAMES

GRID = {  # coordinate search: each in turn over its values, the others held at the best so far, ROUNDS times
    "factors": (16, 32, 64, 128, 256),
    "regularization": (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
    "alpha": (0.0625, 0.25, 1.0, 4.0, 16.0, 64.0),
    "iterations": (5, 15, 30, 50),
    "weighting": ("events", "binary"),
}
ROUNDS = 2


@dataclass(frozen=True)
class AlsParams:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    weighting: str = "events"  # confidence = alpha * summed event weights ("events") or alpha per pair ("binary")


class AlsScorer:
    """implicit's ALS on the customer x product matrix (confidence as `AlsParams.weighting` says)."""

    name = "als"

    def __init__(self, train: Interactions, n_items: int, weights: Mapping[str, float], seed: int,
                 params: AlsParams = AlsParams()) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from scipy.sparse import csr_matrix
        from threadpoolctl import threadpool_limits

        self.customers, user_row = np.unique(train.customer, return_inverse=True)
        kind_weight = np.array([weights[name] for name in EVENT_NAMES])
        value = kind_weight[train.kind] if params.weighting == "events" else np.ones(len(train))
        matrix = csr_matrix((value, (user_row.reshape(-1), train.item)), shape=(len(self.customers), n_items))
        matrix.sum_duplicates()
        if params.weighting == "binary":
            matrix.data[:] = 1.0
        matrix.data *= params.alpha
        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
            self.model = AlternatingLeastSquares(factors=params.factors, iterations=params.iterations,
                                                 regularization=params.regularization, random_state=seed,
                                                 num_threads=1)
            self.model.fit(matrix, show_progress=False)

    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(self.customers, customers), 0, len(self.customers) - 1)
        known = self.customers[pos] == customers
        out = np.asarray(self.model.user_factors)[pos] @ np.asarray(self.model.item_factors).T  # (C, N)
        return np.where(known[:, None], out, 0.0)


def validation_split(split: Split, holdout: int) -> Split:
    """The training part split again: each customer's last `holdout` new products of it validate."""
    return time_split(split.train, holdout)


def tune_als(
    split: Split, n_items: int, weights: Mapping[str, float], seed: int, evaluation: EvaluationConfig,
) -> tuple[AlsParams, list[dict[str, Any]]]:
    """The ALS parameters with the best validation NDCG@10 found by coordinate search over `GRID` from the
    defaults, and every point tried {params..., "ndcg@10"} (each fitted once)."""
    val = validation_split(split, evaluation.holdout)
    metric_only = replace(evaluation, ks=(10,))
    tried: dict[AlsParams, float] = {}

    def score(params: AlsParams) -> float:
        if params not in tried:
            model = AlsScorer(val.train, n_items, weights, seed, params)
            tried[params] = evaluate([model], val, n_items, metric_only)["models"]["als"][PROMOTION_METRIC]
        return tried[params]

    best = AlsParams()
    for _ in range(ROUNDS):
        for name, values in GRID.items():
            best = max((replace(best, **{name: v}) for v in values), key=lambda p: (score(p), p == best))
    return best, [{**asdict(p), PROMOTION_METRIC: v} for p, v in tried.items()]
