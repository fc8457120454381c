"""Probe (BENCHMARKS.md "Training", eighth round): how much of a step the batch preparation is, and how much of it
the thread hides. On `appliance bench train`'s shop-100k split, a short shipped training (`--epochs` network
epochs) is run inline and with `training.prepare_ahead`, alternated; for every step it records the thread CPU
and wall of `appliance.batches.prepare` and the wall the training loop waits for the batch (`ahead`'s next()).
Run: PYTHONPATH=. nice -n 10 .venv/bin/python bench/probes/train8_prep_profile.py [--epochs 1] [--rounds 2]
"""
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import appliance.training
from appliance.config import load_config
from appliance.evaluation import time_split
from web.bench.common import machine_facts
from web.bench.train import load

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--out", default="bench/results/train8_prep_profile.json")
args = parser.parse_args()
config = load_config(None)
DATA = argparse.Namespace(shop_products="10k", datasets_dir="/work/shared/datasets", cache_dir="bench/cache")
vectors, inter = load("shop-100k", DATA, config)
split = time_split(inter, config.evaluation.holdout)
record: dict[str, list[float]] = {}
prepare, ahead = appliance.training.prepare, appliance.training.ahead


def timed_prepare(*a, **k):
    cpu, wall = time.thread_time(), time.perf_counter()
    batch = prepare(*a, **k)
    record["prepare_cpu"].append(time.thread_time() - cpu)
    record["prepare_wall"].append(time.perf_counter() - wall)
    return batch


def timed_ahead(make, count, thread):
    batches = ahead(make, count, thread)
    for _ in range(count):
        wall = time.perf_counter()
        batch = next(batches)
        record["wait"].append(time.perf_counter() - wall)
        step = time.perf_counter()
        yield batch
        record["step"].append(time.perf_counter() - step)  # the loop's own work on the batch


appliance.training.prepare, appliance.training.ahead = timed_prepare, timed_ahead
runs = []
for round_ in range(args.rounds):
    for thread in (False, True):
        record = {"prepare_cpu": [], "prepare_wall": [], "wait": [], "step": []}
        training = dataclasses.replace(config.training, epochs=args.epochs, threads=args.threads,
                                       prepare_ahead=thread)
        wall, cpu = time.perf_counter(), time.process_time()
        appliance.training.train_tower(split.train, vectors, config.tower, training, dict(config.events.weights),
                                       config.feed.popularity_half_life_hours)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        run = {"round": round_, "prepare_ahead": thread, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
               "steps": len(record["step"]), **{f"{name}_seconds": round(sum(v), 2) for name, v in record.items()}}
        runs.append(run)
        print(json.dumps(run), flush=True)
        Path(args.out).write_text(json.dumps({"command": sys.argv, "machine": machine_facts(), "runs": runs},
                                             indent=1) + "\n")
