"""`appliance bench window DATASET`: which serving window (realtime.history_window_hours) ranks best.

The tower is trained once on the split's training part (its examples see the last `tower.history` events before
each positive, with no window). Each test shopper's history is then cut to the events inside the window before
their test time, as serving would load it; a shopper left with no history inside the window gets the popularity
list, as their feed would. The tower and the mean vector are evaluated per window beside popularity (NDCG@10 and
the rest, full ranking, `appliance.evaluation`). Writes `bench/results/window_<dataset>.json`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.baselines import MeanVectorScorer, PopularityScorer, TowerScorer
from appliance.config import load_config
from appliance.evaluation import PROMOTION_METRIC, Scorer, evaluate, test_targets, time_split
from appliance.interactions import Interactions
from appliance.training import train_tower
from web.bench.common import write_result
from web.bench.quality import add_dataset_arguments, embed, interactions_of, load_dataset

WINDOWS_HOURS = (48.0, 168.0, 720.0, 0.0)  # 48 h (the source design), 7 d, 30 d, none


def label(hours: float) -> str:
    if hours <= 0:
        return "none"
    return f"{hours / 24:g} d" if hours % 24 == 0 and hours >= 168 else f"{hours:g} h"


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("window", parents=[common], help="NDCG@10 per serving history window")
    add_dataset_arguments(p)
    p.set_defaults(run=run)


def windowed(train: Interactions, customers: np.ndarray, at: np.ndarray, hours: float) -> Interactions:
    """`train` with each asked customer's events older than `hours` before at[c] left out (hours 0: all kept).
    customers (C,) ascending, at (C,) seconds."""
    if hours <= 0:
        return train
    pos = np.clip(np.searchsorted(customers, train.customer), 0, max(len(customers) - 1, 0))
    asked = customers[pos] == train.customer if len(customers) else np.zeros(len(train), bool)
    cut = np.where(asked, at[pos] - hours * 3600.0, -np.inf)
    return train.take(train.ts >= cut)


class Windowed:
    """A scorer over the windowed history; a shopper with no history inside the window gets popularity."""

    def __init__(self, scorer: Scorer, history: Interactions, popularity: np.ndarray, name: str) -> None:
        self.scorer, self.popularity, self.name = scorer, popularity, name
        self.with_history = np.unique(history.customer)

    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        out = np.array(self.scorer.scores(customers, at), dtype=np.float32)
        out[~np.isin(customers, self.with_history)] = self.popularity
        return out


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    products, events = load_dataset(args.dataset, Path(args.datasets_dir), config)
    vectors = embed(products, config, Path(args.cache_dir))
    split = time_split(interactions_of(products, events), config.evaluation.holdout)
    n_items, weights = len(products), dict(config.events.weights)
    customers, at, _, _ = test_targets(split, n_items)
    started = time.perf_counter()
    model, report = train_tower(split.train, vectors, config.tower, config.training, weights,
                                config.feed.popularity_half_life_hours)
    popular = PopularityScorer(split.train, n_items, weights, config.feed.popularity_half_life_hours)
    scorers: list[Scorer] = [popular]
    covered = {}
    for hours in WINDOWS_HOURS:
        train = windowed(split.train, customers, at, hours)
        covered[label(hours)] = float(np.isin(customers, train.customer).mean())
        tower = TowerScorer(model, train, vectors, popular.popularity)
        mean = MeanVectorScorer(train, vectors, weights, config.tower.history, config.tower.recency_half_life_hours)
        scorers += [Windowed(tower, train, popular.popularity, f"tower {label(hours)}"),
                    Windowed(mean, train, popular.popularity, f"mean_vector {label(hours)}")]
    table = evaluate(scorers, split, n_items, config.evaluation)
    models = table["models"]
    print(f"{args.dataset}: {len(customers)} test shoppers; tower trained in {report.train_seconds:.0f} s")
    print(f"{'window':<8}{'shoppers with history':>24}{'tower NDCG@10':>16}{'mean_vector NDCG@10':>22}")
    for hours in WINDOWS_HOURS:
        name = label(hours)
        print(f"{name:<8}{covered[name]:>24.3f}{models[f'tower {name}'][PROMOTION_METRIC]:>16.4f}"
              f"{models[f'mean_vector {name}'][PROMOTION_METRIC]:>22.4f}")
    print(f"popularity NDCG@10 {models['popularity'][PROMOTION_METRIC]:.4f}")
    path = write_result(f"window_{args.dataset}", args, {
        "windows_hours": list(WINDOWS_HOURS), "shoppers_with_history": covered,
        "seconds": round(time.perf_counter() - started, 1), "training": report.as_dict(), "evaluation": table,
    })
    print(f"wrote {path}")
    return 0
