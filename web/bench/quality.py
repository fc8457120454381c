"""`appliance bench quality DATASET`: recommendation quality of every model on one honest time split.

For the demo shop, MovieLens (ml-latest-small) or the UCI Online Retail sample: products are embedded with
the real encoder (vectors cached by text hash in `--cache-dir`, so re-runs skip it), events become
Interactions, each customer's last `evaluation.holdout` interactions are the test set, and popularity (all-time
and recent), co-occurrence, mean_vector, the trained user tower, implicit's ALS (tuned on validation:
`web.bench.als`) and SASRec (`web.bench.sasrec`) rank the whole catalog (seen items excluded:
`appliance.evaluation`), on all test customers and on the cold-start slice (new products without any training
event). Prints the tables with the tower's paired intervals and writes `bench/results/quality_<dataset>.json`,
with training seconds per 100k training events and the peak resident memory (getrusage maxrss).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from appliance.baselines import RecentPopularityScorer, TowerScorer, baseline_scorers, prior_popularity
from appliance.config import Config, load_config
from appliance.demo import generate_demo
from appliance.encoder import Encoder
from appliance.errors import InvalidInput
from appliance.evaluation import cold_items, evaluate, format_table, paired_difference, test_targets, time_split
from appliance.interactions import Interactions, seen_matrix
from appliance.item_side import item_correction
from appliance.text import product_text, text_hash
from appliance.training import train_tower
from appliance.types import EVENT_INDEX, Event, Product, now_utc
from storage.datasets import MOVIELENS_DIR, RETAIL_FILE, load_movielens, load_online_retail
from web.bench.als import AlsScorer, tune_als
from web.bench.common import DEFAULT_OUT, REPO, write_result
from web.bench.sasrec import params_for, train_sasrec

DATASETS = ("demo", "movielens", "retail")
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
DEFAULT_CACHE = Path("bench/cache")


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of a benchmark over one of the real data sets (quality, prior, window)."""
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--datasets-dir", default=str(DEFAULT_DATASETS), help="shared/datasets folder")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="product-vector cache (default bench/cache)")
    p.add_argument("--config", help="a TOML file overriding the shipped config.toml")
    p.set_defaults(positionals=("dataset",))


def add_quality_parser(subparsers: Any, common: argparse.ArgumentParser | None = None) -> None:
    """Register `quality` on the `bench` sub-parsers."""
    p = subparsers.add_parser("quality", parents=[common] if common else [],
                              help="NDCG/recall of popularity, co-occurrence, mean vector, tower and ALS")
    if common is None:
        p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for quality_DATASET.json")
    add_dataset_arguments(p)
    p.add_argument("--no-als", action="store_true", help="leave out implicit's ALS (tuned on validation)")
    p.add_argument("--no-tower", action="store_true", help="leave out the user tower (baselines only)")
    p.add_argument("--no-sasrec", action="store_true", help="leave out SASRec")
    p.add_argument("--sasrec-loss", default="ce,bce", help="SASRec variants to train: ce (full softmax), bce (paper)")
    p.add_argument("--cold-shares", default="", help="comma-separated cold shares (ranking.cold_slots) the trained "
                   "tower is also ranked with, as ablation rows (its own, chosen on validation, is the tower row)")
    p.add_argument("--cold-by-text", action="store_true", help="also rank the cold slots of every --cold-shares "
                   "share (and the tower's own) by the tower's text side (its residual mean) instead of its cosine "
                   "(ablation rows)")
    p.add_argument("--item-side", action="store_true", help="also rank the tower against product vectors with a "
                   "learned per-product correction (appliance.item_side; an ablation row)")
    p.add_argument("--live-prior", action="store_true", help="also rank the tower, all-time and recent popularity "
                   "with popularity as a live feed has it at each test moment: every event strictly before it, other "
                   "customers' test events included (rows tower_live_prior, popularity_live, popularity_recent_live)")
    p.add_argument("--pair-with", default="", help="comma-separated quality JSONs of earlier runs on the same split: "
                   "the tower is also paired against their models (per-customer NDCG@10, all and cold start)")
    p.set_defaults(run=run)


def load_dataset(name: str, datasets_dir: Path, config: Config) -> tuple[list[Product], list[Event]]:
    if name == "movielens":
        return load_movielens(datasets_dir / MOVIELENS_DIR)
    if name == "retail":
        return load_online_retail(datasets_dir / RETAIL_FILE)
    demo = config.demo
    shop = generate_demo(demo.seed, demo.products, demo.customers, demo.days, now_utc())
    return shop.products, shop.events


def embed(products: Sequence[Product], config: Config, cache_dir: Path) -> np.ndarray:
    """(N, D) product vectors, from `cache_dir/vectors.npz` (text hash -> vector) or the encoder."""
    lines = [product_text(p, config.catalog.tier_thresholds) for p in products]
    hashes = [text_hash(config.encoder.model, line) for line in lines]
    path = cache_dir / "vectors.npz"
    cached: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as stored:
            cached = dict(zip(stored["hashes"].tolist(), stored["vectors"], strict=True))
    missing = sorted({h for h in hashes if h not in cached})
    if missing:
        encoder = Encoder(config.encoder.model, config.encoder.dim, config.encoder.batch_size)
        encoder.load()
        line_of = dict(zip(hashes, lines, strict=True))
        for h, vector in zip(missing, encoder.encode([line_of[h] for h in missing]), strict=True):
            cached[h] = vector
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / "vectors.tmp.npz"
        np.savez(tmp, hashes=np.array(list(cached)), vectors=np.stack(list(cached.values())))
        os.replace(tmp, path)
    return np.stack([cached[h] for h in hashes]).astype(np.float32)


def interactions_of(products: Sequence[Product], events: Sequence[Event]) -> Interactions:
    row = {p.product_id: i for i, p in enumerate(products)}
    kept = [e for e in events if e.product_id in row]
    return Interactions.from_arrays(
        [e.customer_id for e in kept], [row[e.product_id] for e in kept], [EVENT_INDEX[e.event_name] for e in kept],
        [e.ts.timestamp() for e in kept], n_items=len(products),
    )


def live_prior_scorers(
    model: Any, train: Interactions, every: Interactions, vectors: np.ndarray, config: Config, depth: int
) -> list[Any]:
    """The tower, all-time and recent popularity with popularity as a live feed has it at each test moment:
    every event of `every` (train and test) strictly before it. The evaluation's own rows count training events
    only, so a test moment misses the other customers' test baskets before it (on retail a third of the 30-day
    popularity, BENCHMARKS.md "Retail"); the customer's own test events are never before its moment. Histories
    (the tower's input) stay the training events."""
    if config.training.prior_as_of != "moment":
        raise InvalidInput("--live-prior needs training.prior_as_of = \"moment\"", field="live_prior")
    weights, n_items = dict(config.events.weights), len(vectors)
    live = RecentPopularityScorer(every, n_items, weights, config.training.prior_half_life_hours)
    return [
        TowerScorer(model, train, vectors, live, "tower_live_prior", depth=depth),
        RecentPopularityScorer(every, n_items, weights, math.inf, "popularity_live"),
        RecentPopularityScorer(every, n_items, weights, config.feed.popularity_half_life_hours,
                               "popularity_recent_live"),
    ]


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)  # the machine is shared; every model here trains on one thread
    config = load_config(args.config)
    started = time.perf_counter()
    products, events = load_dataset(args.dataset, Path(args.datasets_dir), config)
    vectors = embed(products, config, Path(args.cache_dir))
    inter = interactions_of(products, events)
    split = time_split(inter, config.evaluation.holdout)
    n_items = len(products)
    prepared = time.perf_counter() - started
    memory = {"after_load_and_embed_mib": peak_mib()}
    weights = dict(config.events.weights)
    scorers = baseline_scorers(split.train, vectors, weights, config.tower.history,
                               config.tower.recency_half_life_hours, config.feed.popularity_half_life_hours)
    facts: dict[str, Any] = {}
    report = None
    if not args.no_tower:
        training = config.training
        model, report = train_tower(split.train, vectors, config.tower, training, weights,
                                    training.prior_half_life_hours)
        memory["after_tower_mib"] = peak_mib()
        popularity = prior_popularity(split.train, n_items, weights, training.prior_as_of,
                                      training.prior_half_life_hours)
        scorers.append(TowerScorer(model, split.train, vectors, popularity, depth=max(config.evaluation.ks)))
        shares = {float(x) for x in filter(None, args.cold_shares.split(","))}
        own = round(float(model.cold_share), 6)  # the checkpoint's float32, as cold_slots reads it
        if own > 0.0:  # the ablation: the same tower ranked by its score alone
            shares.add(0.0)
        if args.item_side:
            t0 = time.perf_counter()
            adapted, history = item_correction(model, split.train, vectors, training, weights)
            facts["item_side"] = {"validation": history, "seconds": round(time.perf_counter() - t0, 2)}
            print(f"item side: validation NDCG@10 per epoch {[round(v, 4) for v in history]}")
            scorers.append(TowerScorer(model, split.train, vectors, popularity, "tower_item_side",
                                       depth=max(config.evaluation.ks), targets=adapted))
        if args.live_prior:
            scorers += live_prior_scorers(model, split.train, inter, vectors, config, max(config.evaluation.ks))
        for share in sorted(shares - {own}):
            name = "tower_no_slots" if share == 0.0 else f"tower_cold_share_{share:g}"
            scorers.append(TowerScorer(model, split.train, vectors, popularity, name, share, max(config.evaluation.ks)))
        for share in sorted((shares | {own}) - {0.0}) if args.cold_by_text else ():
            scorers.append(TowerScorer(model, split.train, vectors, popularity, f"tower_cold_share_{share:g}_by_text",
                                       share, max(config.evaluation.ks), cold_by_text=True))
    if not args.no_als:
        t0 = time.perf_counter()
        params, tried = tune_als(split, n_items, weights, config.training.seed, config.evaluation)
        scorers.append(AlsScorer(split.train, n_items, weights, config.training.seed, params))
        facts["als"] = {"params": asdict(params), "tune_and_train_seconds": round(time.perf_counter() - t0, 2),
                        "validation": tried}
        print(f"als: chosen on validation {asdict(params)} ({len(tried)} points, "
              f"{facts['als']['tune_and_train_seconds']:.0f} s)")
        memory["after_als_mib"] = peak_mib()
    for loss in [] if args.no_sasrec else args.sasrec_loss.split(","):
        sasrec, sas_report = train_sasrec(split, n_items, params_for(args.dataset, loss), config.evaluation,
                                          config.training.seed)
        scorers.append(sasrec)
        facts[sasrec.name] = asdict(sas_report)
        print(f"{sasrec.name}: {sas_report.train_seconds:.0f} s, {sas_report.epochs} epochs, kept epoch "
              f"{sas_report.best_epoch} (validation NDCG@10 {sas_report.best_validation_ndcg:.4f})")
        memory[f"after_{sasrec.name}_mib"] = peak_mib()
    print(f"{args.dataset}: {len(products)} products, {len(inter)} events, {len(np.unique(inter.customer))} customers")
    stored = _stored_runs(args.pair_with)
    tables = {"all": _slice(scorers, split, n_items, config, None, stored["all"])}
    cold = cold_items(split, n_items)
    if cold.any() and len(test_targets(split, n_items, cold)[0]):
        tables["cold"] = _slice(scorers, split, n_items, config, cold, stored["cold"])
    else:
        print("cold start: no test customer's new product is one without training events")
    memory["peak_mib"] = peak_mib()
    facts.update({
        "products": n_items, "events": len(inter), "customers": int(len(np.unique(inter.customer))),
        "train_events": len(split.train), "test_events": len(split.test), "cold_products": int(cold.sum()),
        "repeat_share_of_test": _repeat_share(split, n_items), "prepare_seconds": round(prepared, 2),
        "memory": {k: round(v, 1) for k, v in memory.items()},
    })
    if report is not None:
        facts["tower_train_seconds"] = round(report.train_seconds, 2)
        facts["tower_seconds_per_100k_events"] = round(report.train_seconds / max(len(split.train), 1) * 1e5, 2)
        print(f"tower: {report.train_seconds:.1f} s ({facts['tower_seconds_per_100k_events']} s per 100k training "
              f"events), {report.epochs} epochs, kept epoch {report.best_epoch}")
    print(f"peak RSS {memory['peak_mib']:.0f} MiB")
    path = write_result(f"quality_{args.dataset}", args, {
        "config": {"tower": _plain(config.tower), "training": _plain(config.training)},
        **facts, "evaluation": tables["all"][0], "tower_versus": tables["all"][1],
        "cold_start": dict(zip(("evaluation", "tower_versus"), tables["cold"], strict=True))
        if "cold" in tables else None,
        "training": report.as_dict() if report is not None else None})
    print(f"wrote {path}")
    return 0


def _stored_runs(paths: str) -> dict[str, dict[str, list[float]]]:
    """{"all" | "cold": {model: per-customer NDCG@10}} of earlier runs' JSONs; a model name already taken by an
    earlier file gets its file's name appended."""
    out: dict[str, dict[str, list[float]]] = {"all": {}, "cold": {}}
    for path in filter(None, (p.strip() for p in paths.split(","))):
        body = json.loads(Path(path).read_text())
        parts = {"all": body["evaluation"], "cold": (body.get("cold_start") or {}).get("evaluation") or {}}
        for part, table in parts.items():
            for name, values in table.get("per_customer", {}).items():
                taken = name in out[part] or name.startswith("tower")  # the towers of every run have one name
                out[part][f"{name}@{Path(path).stem}" if taken else name] = values
    return out


def _slice(
    scorers: Sequence[Any], split: Any, n_items: int, config: Config, items: np.ndarray | None,
    stored: dict[str, list[float]],
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Evaluate every scorer (on the test items in `items`, or all), print the table and the tower's paired
    NDCG@10 gain over each other model, and over `stored` (the same customers' NDCG@10 from earlier runs on
    this split); returns (table, gains)."""
    table = evaluate(scorers, split, n_items, config.evaluation, per_customer=True, items=items)
    per_customer = table["per_customer"]  # kept in the JSON: runs on the same split pair up later
    others = {**stored, **{n: v for n, v in per_customer.items() if n != "tower"}}
    for name, values in stored.items():
        if len(values) != table["customers"]:
            raise ValueError(f"--pair-with: {name} has {len(values)} customers here, this run {table['customers']}:"
                             " not the same split")
    versus = {name: paired_difference(per_customer["tower"], values)
              for name, values in others.items() if "tower" in per_customer}
    print("all test customers:" if items is None else "cold start (new product without any training event):")
    print(format_table(table))
    for name, d in versus.items():
        print(f"tower - {name}: NDCG@10 {d['mean']:+.4f} (95% paired bootstrap {d['low']:+.4f} .. {d['high']:+.4f}, "
              f"p {d['p']:.3f})")
    return table, versus


def _repeat_share(split: Any, n_items: int) -> float:
    """Share of test customers whose every test item was seen before (they are not evaluated)."""
    customers = np.unique(split.test.customer)
    if not len(customers):
        return 0.0
    fresh = seen_matrix(split.test, customers, n_items) & ~seen_matrix(split.train, customers, n_items)
    return round(float(1.0 - fresh.any(1).mean()), 4)


def _plain(section: Any) -> dict[str, Any]:
    return asdict(section)
