"""Probe (BENCHMARKS.md "Training", eighth round): the next batch prepared in a thread (`training.prepare_ahead`)
against torch threads, alternated in one process on `appliance bench train`'s shop-100k time split.

Variants are "THREADS:AHEAD" (e.g. 1:0 is one torch thread, inline preparation); they run round-robin `--rounds`
times, each a whole shipped training (no test evaluation: the model is the same with or without the thread, a
test checks it). Each run records wall and process CPU seconds (all threads), the calibration matmul
(/work/wt/calib.py) and the load before it, and the report's kept epoch and validation NDCG@10.
Run: PYTHONPATH=. nice -n 10 .venv/bin/python bench/probes/train8_ahead_ab.py --variants 1:0,1:1,2:0,2:1
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from appliance.config import load_config
from appliance.evaluation import time_split
from appliance.training import train_tower
from web.bench.common import machine_facts
from web.bench.train import load

CALIBRATION = ["/work/main/.venv/bin/python", "/work/wt/calib.py"]
parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--variants", default="1:0,1:1,2:0,2:1")
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--dataset", default="shop-100k")
parser.add_argument("--replace", default="{}", help="JSON of other [training] keys to replace")
parser.add_argument("--out", default="bench/results/train8_ahead_ab.json")
args = parser.parse_args()
config = load_config(None)
DATA = argparse.Namespace(shop_products="10k", datasets_dir="/work/shared/datasets", cache_dir="bench/cache")
vectors, inter = load(args.dataset, DATA, config)
split = time_split(inter, config.evaluation.holdout)
runs = []
for round_ in range(args.rounds):
    for variant in args.variants.split(","):
        threads, ahead = (int(v) for v in variant.split(":"))
        training = dataclasses.replace(config.training, threads=threads, prepare_ahead=bool(ahead),
                                       **json.loads(args.replace))
        calibration = subprocess.run(CALIBRATION, capture_output=True, text=True).stdout.strip()
        load_before = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        _, report = train_tower(split.train, vectors, config.tower, training, dict(config.events.weights),
                                config.feed.popularity_half_life_hours)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        per_100k = 1e5 / len(split.train)
        run = {"round": round_, "threads": threads, "prepare_ahead": bool(ahead), "calibration": calibration,
               "load_before": load_before, "load_after": os.getloadavg()[0],
               "wall_seconds_per_100k": round(wall * per_100k, 1), "cpu_seconds_per_100k": round(cpu * per_100k, 1),
               "epochs": report.epochs, "best_epoch": report.best_epoch,
               "validation_ndcg@10": report.best_validation_ndcg, "time": time.strftime("%H:%M:%S")}
        runs.append(run)
        print(json.dumps(run), flush=True)
        Path(args.out).write_text(json.dumps({"command": sys.argv, "machine": machine_facts(), "dataset": args.dataset,
                                              "train_events": len(split.train), "runs": runs}, indent=1) + "\n")
