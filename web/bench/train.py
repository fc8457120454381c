"""`appliance bench train`: seconds per 100k training events and NDCG@10 of the user tower, recipe by recipe.

Data sets: the demo shop, MovieLens (ml-latest-small), the UCI Online Retail sample (as `bench quality` loads and
embeds them) and synthetic shops of `--shop-products` products with 100k or 1M events (`shop-100k`, `shop-1M`):
product vectors in clusters as `web.bench.synth` makes them, each shopper browsing two favourite clusters (80 %
of their events, popular products more often) over 30 days. Each data set is split in time
(`appliance.evaluation.time_split`); each recipe trains on the training part and ranks the whole catalog for the
test customers. A recipe is the shipped `[training]` config with some keys replaced: `before` is the recipe
before issue 15 (the whole catalog as negatives, float32), `round1` its first round (batches of 128, a constant
rate, up to 20 epochs), `round2` its second (uniform shared negatives only, the first phase uncapped, every epoch
validated), `round4` the recipe before its fifth round (2,048 shared negatives in every catalog over 2,048
products, the best validated epoch kept), `after` the shipped one; `--curve` adds the shipped recipe with
other bounds of epochs or other numbers of shared negatives: the trade-off of seconds against NDCG@10.

Wall time is noisy on a shared machine, so the CPU time of the training process (`time.process_time`) is printed
beside it. Writes `bench/results/train.json` (`train_DATASET_....json` for other than all data sets).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.baselines import TowerScorer, baseline_scorers
from appliance.config import Config, load_config
from appliance.evaluation import evaluate, time_split
from appliance.interactions import Interactions
from appliance.training import train_tower
from appliance.types import EVENT_NAMES
from web.bench.common import parse_size, size_label, table, verdict, write_result
from web.bench.quality import DATASETS, DEFAULT_CACHE, DEFAULT_DATASETS, embed, interactions_of, load_dataset
from web.bench.synth import EVENT_SHARES, centres, members

ALL = "demo,movielens,retail,shop-100k,shop-1M"
RECIPES: dict[str, dict[str, Any]] = {
    "before": {"negatives": "full", "precision": "float32"},  # the recipe before issue 15
    "round1": {"epochs": 20, "batch_size": 128, "learning_rate": 0.001, "schedule": "constant",
               "min_network_steps": 0},  # its first round
    "round2": {"shared_positives": False, "scalar_examples": 10**9, "validate_every": 1,
               "min_network_steps": 0},  # its second round
    "round4": {"shared_negatives": 2048, "whole_catalog": 0, "keep_within": 0.0},  # before its fifth round
    "after": {},  # the shipped config.toml
}
CURVE: dict[str, dict[str, Any]] = {  # --curve: the shipped recipe with other network epochs or negatives
    "epochs 3": {"epochs": 3},
    "epochs 4": {"epochs": 4},
    "epochs 6": {"epochs": 6},
    "shared 768": {"shared_negatives": 768},
    "shared 1024": {"shared_negatives": 1024},  # the default before the seventh round
}
TARGET_SECONDS_PER_100K = 60.0  # 100k events of a 10k-product shop in a minute ...
TARGET_SECONDS_PER_1M = 600.0  # ... and 1M events in ten


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="training seconds per 100k events and NDCG@10, per recipe")
    p.add_argument("--datasets", default=ALL,
                   help="comma-separated: demo, movielens, retail, shop-100k, shop-1M (default all)")
    p.add_argument("--recipes", default="before,after",
                   help="comma-separated: before, round1, round2, round4, after (default before,after)")
    p.add_argument("--curve", action="store_true", help=f"also the recipes {', '.join(CURVE)}")
    p.add_argument("--skip", default="", help="comma-separated DATASET:RECIPE pairs to leave out "
                                              "(e.g. shop-1M:before, hours of full-catalog softmax)")
    p.add_argument("--shop-products", default="10k", help="products of the synthetic shops (default 10k)")
    p.add_argument("--datasets-dir", default=str(DEFAULT_DATASETS), help="shared/datasets folder")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="product-vector cache (default bench/cache)")
    p.set_defaults(run=run)


def synthetic_shop(products: int, events: int, seed: int = 7, dim: int = 384) -> tuple[np.ndarray, Interactions]:
    """(N, D) clustered product vectors and `events` interactions of events / 20 shoppers with two tastes."""
    rng = np.random.default_rng(seed)
    n_clusters = max(8, products // 100)
    cluster = rng.integers(0, n_clusters, products)  # (N,)
    vectors = members(rng, centres(rng, n_clusters, dim), cluster)
    weight = 1.0 / rng.permutation(np.arange(1, products + 1)) ** 0.9  # Zipf-like popularity, shuffled over products
    in_cluster = [np.flatnonzero(cluster == c) for c in range(n_clusters)]
    cumulative = [np.cumsum(weight[m]) / weight[m].sum() for m in in_cluster]
    customers = max(1, events // 20)
    customer = rng.integers(0, customers, events)  # (E,)
    taste = rng.integers(0, n_clusters, (customers, 2))[customer, rng.integers(0, 2, events)]  # (E,)
    item = rng.choice(products, size=events, p=weight / weight.sum())  # 20 %: anything popular
    own = rng.random(events) < 0.8
    for c in np.unique(taste[own]):  # 80 %: a popular product of one of the shopper's two clusters
        at = np.flatnonzero(own & (taste == c))
        item[at] = in_cluster[c][np.minimum(np.searchsorted(cumulative[c], rng.random(len(at))),
                                            len(in_cluster[c]) - 1)]
    kind = rng.choice(len(EVENT_NAMES), size=events, p=np.asarray(EVENT_SHARES) / sum(EVENT_SHARES))
    ts = 1.75e9 + rng.uniform(0, 30 * 86400, events)
    return vectors, Interactions.from_arrays(customer, item, kind, ts, n_items=products)


def load(name: str, args: argparse.Namespace, config: Config) -> tuple[np.ndarray, Interactions]:
    if name in DATASETS:
        products, events = load_dataset(name, Path(args.datasets_dir), config)
        return embed(products, config, Path(args.cache_dir)), interactions_of(products, events)
    if name.startswith("shop-"):
        return synthetic_shop(parse_size(args.shop_products), parse_size(name.removeprefix("shop-")))
    raise SystemExit(f"unknown data set {name!r}: demo, movielens, retail, shop-100k, shop-1M")


def recipes(args: argparse.Namespace, config: Config) -> dict[str, dict[str, Any]]:
    chosen = {}
    for name in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        if name not in RECIPES:
            raise SystemExit(f"unknown recipe {name!r}: {', '.join(RECIPES)}")
        chosen[name] = RECIPES[name]
    if args.curve:
        chosen.update(CURVE)
    return chosen


def measure(vectors: np.ndarray, inter: Interactions, config: Config, replace: dict[str, Any]) -> dict[str, Any]:
    """Train one recipe on the time split's training part; seconds (wall, CPU) and the tower's test metrics."""
    split = time_split(inter, config.evaluation.holdout)
    training = dataclasses.replace(config.training, **replace)
    weights, half_life = dict(config.events.weights), config.feed.popularity_half_life_hours
    wall, cpu = time.perf_counter(), time.process_time()
    model, report = train_tower(split.train, vectors, config.tower, training, weights, half_life)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    popularity = baseline_scorers(split.train, vectors, weights, config.tower.history,
                                  config.tower.recency_half_life_hours, half_life)[0].popularity
    scores = evaluate([TowerScorer(model, split.train, vectors, popularity)], split, len(vectors),
                      config.evaluation)["models"]["tower"]
    per_100k = 1e5 / max(len(split.train), 1)
    return {"train_events": len(split.train), "examples": report.examples, "epochs": report.epochs,
            "best_epoch": report.best_epoch, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "wall_seconds_per_100k": round(wall * per_100k, 1), "cpu_seconds_per_100k": round(cpu * per_100k, 1),
            "ndcg@10": round(scores["ndcg@10"], 4), "recall@50": round(scores["recall@50"], 4),
            "validation_ndcg@10": report.best_validation_ndcg, "training": dataclasses.asdict(training),
            "report": report.as_dict()}


def run(args: argparse.Namespace) -> int:
    config = load_config()
    skip = {tuple(s.split(":", 1)) for s in args.skip.split(",") if ":" in s}
    results: dict[str, dict[str, Any]] = {}
    rows = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        vectors, inter = load(name, args, config)
        print(f"{name}: {len(vectors):,} products, {len(inter):,} events", flush=True)
        results[name] = {"products": len(vectors), "events": len(inter), "recipes": {}}
        for recipe, replace in recipes(args, config).items():
            if (name, recipe) in skip:
                continue
            r = measure(vectors, inter, config, replace)
            results[name]["recipes"][recipe] = r
            rows.append([name, recipe, r["examples"], r["epochs"], r["wall_seconds"], r["cpu_seconds"],
                         r["wall_seconds_per_100k"], r["cpu_seconds_per_100k"], r["ndcg@10"], r["recall@50"]])
            print(f"  {recipe}: {r['cpu_seconds_per_100k']} CPU s per 100k events ({r['wall_seconds_per_100k']} wall),"
                  f" NDCG@10 {r['ndcg@10']}", flush=True)
    print(table("training (seconds per 100k training events; NDCG@10 of the tower on the test split)",
                ["data", "recipe", "examples", "epochs", "wall s", "CPU s", "wall s/100k", "CPU s/100k",
                 "NDCG@10", "recall@50"], rows))
    for name, target in (("shop-100k", TARGET_SECONDS_PER_100K), ("shop-1M", TARGET_SECONDS_PER_1M)):
        after = results.get(name, {}).get("recipes", {}).get("after")
        if after:
            print(verdict(f"{name} after, wall", after["wall_seconds"], target, False, "s"))
            print(verdict(f"{name} after, CPU", after["cpu_seconds"], target, False, "s"))
    for name, data in results.items():
        before, after = data["recipes"].get("before"), data["recipes"].get("after")
        if before and after and before["ndcg@10"]:
            print(f"  {name}: NDCG@10 after / before {after['ndcg@10'] / before['ndcg@10']:.3f}, "
                  f"CPU time after / before {after['cpu_seconds'] / max(before['cpu_seconds'], 1e-9):.3f}")
    chosen = [d.strip() for d in args.datasets.split(",") if d.strip()]
    name = "train" if chosen == ALL.split(",") else "_".join(["train", *chosen])
    path = write_result(name, args, {"shop_products": size_label(parse_size(args.shop_products)),
                                        "datasets": results})
    print(f"wrote {path}")
    return 0
