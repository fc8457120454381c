"""`appliance bench prior DATASET`: which popularity serves the tower's prior best on this data.

The tower ranks by cosine + weight * log(1 + popularity). Which popularity: the feed's (time-decayed with
`feed.popularity_half_life_hours`, as of the end of the training data) suits a live shop, but on a log spanning
months or years most customers' moments lie long before that end. This bench measures, without training,
the initial tower (the mean of recent vectors, as training starts) plus the prior over each definition:
popularity at the end of the training data or as of each customer's own moment, for several half-lives.
The weight is chosen on the validation split carved from training (`als.validation_split`); the test
NDCG@10 is then measured with that weight, with the paired interval against the feed's definition.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from appliance.baselines import MeanVectorScorer, PopularityScorer, RecentPopularityScorer
from appliance.config import load_config
from appliance.evaluation import PROMOTION_METRIC, evaluate, paired_difference, time_split
from appliance.ranking import popularity_prior
from web.bench.als import validation_split
from web.bench.common import write_result

HALF_LIVES = (72.0, 720.0, 8760.0, math.inf)  # hours: 3 days (the feed's default), 30 days, 1 year, all-time
WEIGHTS = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)  # prior weights tried on validation (cosine units)


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from web.bench.quality import add_dataset_arguments

    p = subparsers.add_parser("prior", parents=[common], help="which popularity serves the tower's prior best")
    add_dataset_arguments(p)
    p.set_defaults(run=run)


class WithPrior:
    """A scorer plus weight * log(1 + popularity) from a popularity scorer (the tower's ranking rule)."""

    def __init__(self, base: Any, popularity: Any, weight: float, name: str) -> None:
        self.base, self.popularity, self.weight, self.name = base, popularity, weight, name

    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        prior = popularity_prior(self.popularity.scores(customers, at))
        return self.base.scores(customers, at) + self.weight * prior


def _label(moment: bool, half_life: float) -> str:
    return f"{'moment' if moment else 'end'}_{'all' if math.isinf(half_life) else f'{half_life:g}h'}"


def run(args: argparse.Namespace) -> int:
    from web.bench.quality import embed, interactions_of, load_dataset

    config = load_config(args.config)
    products, events = load_dataset(args.dataset, Path(args.datasets_dir), config)
    vectors = embed(products, config, Path(args.cache_dir))
    n_items, weights = len(products), dict(config.events.weights)
    split = time_split(interactions_of(products, events), config.evaluation.holdout)
    val = validation_split(split, config.evaluation.holdout)
    metric_only = replace(config.evaluation, ks=(10,))

    def scorer(part: Any, moment: bool, half_life: float, weight: float) -> WithPrior:
        source = (RecentPopularityScorer if moment else PopularityScorer)(part, n_items, weights, half_life)
        base = MeanVectorScorer(part, vectors, weights, config.tower.history, config.tower.recency_half_life_hours)
        return WithPrior(base, source, weight, _label(moment, half_life))

    rows, tests = {}, {}
    for moment in (False, True):
        for half_life in HALF_LIVES:
            label = _label(moment, half_life)
            grid = [scorer(val.train, moment, half_life, w) for w in WEIGHTS]
            for s, w in zip(grid, WEIGHTS, strict=True):
                s.name = f"w{w:g}"
            on_val = evaluate(grid, val, n_items, metric_only)["models"]
            weight = max(WEIGHTS, key=lambda w: (on_val[f"w{w:g}"][PROMOTION_METRIC], -w))
            test = evaluate([scorer(split.train, moment, half_life, weight)], split, n_items, metric_only,
                            per_customer=True)
            tests[label] = test["per_customer"][label]
            rows[label] = {"weight": weight, "validation_ndcg@10": on_val[f"w{weight:g}"][PROMOTION_METRIC],
                           "test_ndcg@10": test["models"][label][PROMOTION_METRIC]}
    feed = _label(False, config.feed.popularity_half_life_hours)
    for label, row in rows.items():
        if label in tests and feed in tests:
            row["test_gain_over_feed"] = paired_difference(tests[label], tests[feed])
    print(f"{args.dataset}: mean of recent vectors + weight x log(1 + popularity); weight chosen on validation")
    print(f"{'popularity':<14}{'weight':>8}{'val ndcg@10':>13}{'test ndcg@10':>14}   test gain over {feed} (95 %)")
    for label, row in rows.items():
        gain = row.get("test_gain_over_feed")
        extra = f"   {gain['mean']:+.4f} ({gain['low']:+.4f} .. {gain['high']:+.4f})" if gain else ""
        print(f"{label:<14}{row['weight']:>8g}{row['validation_ndcg@10']:>13.4f}{row['test_ndcg@10']:>14.4f}{extra}")
    path = write_result(f"prior_{args.dataset}", args, {"feed_definition": feed, "definitions": rows})
    print(f"wrote {path}")
    return 0
