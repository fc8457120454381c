"""One-off probe (BENCHMARKS.md "Training", seventh round): where a shop-100k training's CPU goes, part by part.

Each part is timed by a `time.process_time` wrapper around its function (nested parts are inside the outer one:
`epoch` holds the step's parts, `validate` its prior rows); `--ops` profiles instead with torch.profiler and
prints the ops by self CPU time. The data is `appliance bench train`'s shop-100k and its time split.
Run: PYTHONPATH=. .venv/bin/python bench/probes/train7_profile.py [--ops] [--epochs N] [--dataset shop-100k]"""
import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path

import torch

import appliance.batches
import appliance.examples
import appliance.prior
import appliance.training
from appliance.config import load_config
from appliance.evaluation import time_split
from appliance.tower import UserTower
from web.bench.train import load

parser = argparse.ArgumentParser()
parser.add_argument("--ops", action="store_true")
parser.add_argument("--epochs", type=int, default=0, help="network epochs (0: the shipped recipe's)")
parser.add_argument("--dataset", default="shop-100k")
args = parser.parse_args()
config = load_config(None)
vectors, inter = load(args.dataset, argparse.Namespace(shop_products="10k", datasets_dir="/work/shared/datasets",
                                                       cache_dir="bench/cache"), config)
split = time_split(inter, config.evaluation.holdout)
training = config.training if not args.epochs else dataclasses.replace(config.training, epochs=args.epochs)
parts: dict[str, list[float]] = {}


def timed(name, function):
    @functools.wraps(function)
    def wrapper(*a, **k):
        t = time.process_time()
        try:
            return function(*a, **k)
        finally:
            parts.setdefault(name, []).append(time.process_time() - t)
    return wrapper


if not args.ops:
    run = appliance.training._Run
    for name, owner, attribute in [
        ("epoch", run, "_epoch"), ("validate", run, "_validate"), ("columns", run, "_columns"),
        ("loss", appliance.training, "contrastive_loss"), ("batch_inputs", appliance.batches, "batch_inputs"),
        ("prior.rows", appliance.examples.MomentPrior, "rows"),
        ("prior.positive", appliance.examples.MomentPrior, "positive"),
        ("tower.forward", UserTower, "forward"), ("backward", torch.Tensor, "backward"),
        ("optimizer.step", appliance.training.AdamW, "step"), ("clip", torch.nn.utils, "clip_grad_norm_"),
        ("choose_prior", appliance.training, "choose_prior"),
        ("choose_cold_share", appliance.training, "choose_cold_share"),
        ("validation_grid", appliance.prior, "validation_grid"), ("examples", appliance.training, "make_examples"),
        ("moment_prior", appliance.training, "MomentPrior"),
    ]:
        setattr(owner, attribute, timed(name, getattr(owner, attribute)))
cpu, wall = time.process_time(), time.perf_counter()
if args.ops:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        _, report = appliance.training.train_tower(split.train, vectors, config.tower, training,
                                                   dict(config.events.weights), config.feed.popularity_half_life_hours)
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))
else:
    _, report = appliance.training.train_tower(split.train, vectors, config.tower, training,
                                               dict(config.events.weights), config.feed.popularity_half_life_hours)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(f"total CPU {cpu:.1f} s wall {wall:.1f} s epochs {report.epochs} (scalar {report.scalar_epochs}) kept "
      f"{report.best_epoch} val {report.best_validation_ndcg:.4f} train events {len(split.train)}")
table = {name: {"cpu_seconds": round(sum(t), 2), "share": round(sum(t) / cpu, 3), "calls": len(t),
                "ms_each": round(sum(t) / len(t) * 1e3, 2)} for name, t in parts.items()}
print(json.dumps(table, indent=1))
Path("/tmp/train7").mkdir(exist_ok=True)
Path("/tmp/train7/profile_last.json").write_text(json.dumps({"total_cpu": cpu, "wall": wall, "parts": table}))
