"""Probe (BENCHMARKS.md "Training", eighth and ninth rounds): recipes of `[training]` alternated in one process,
each a whole training by `appliance bench train`'s `measure` (the time split, then NDCG@10 on the test part).

A variant is a JSON object of `[training]` keys to replace (`{}`: the shipped config); the variants run
round-robin `--rounds` times on each data set (A B A B: the machine's load moves between runs, so only pairs in
one window compare). Each run records the calibration matmul (/work/wt/calib.py) and the load before it, wall
and process CPU seconds (all threads) per 100k training events, the kept epoch, validation and test NDCG@10.
Run: PYTHONPATH=. nice -n 10 .venv/bin/python bench/probes/train_ab.py --datasets shop-100k \
  --variants '[{"threads": 1}, {"threads": 2}]' --out bench/results/train9_threads.json
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from appliance.config import load_config
from web.bench.common import machine_facts
from web.bench.train import load, measure

CALIBRATION = [sys.executable, "/work/wt/calib.py"]
parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--variants", default='[{"threads": 1}, {"threads": 2}]', help="JSON list of replacements")
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--datasets", default="shop-100k")
parser.add_argument("--out", required=True)
args = parser.parse_args()
config = load_config(None)
DATA = argparse.Namespace(shop_products="10k", datasets_dir="/work/shared/datasets", cache_dir="bench/cache")
runs = []
for dataset in args.datasets.split(","):
    vectors, inter = load(dataset, DATA, config)
    for round_ in range(args.rounds):
        for variant in json.loads(args.variants):
            calibration = subprocess.run(CALIBRATION, capture_output=True, text=True).stdout.strip()
            load_before = os.getloadavg()[0]
            result = measure(vectors, inter, config, variant)
            run = {"dataset": dataset, "round": round_, "variant": variant, "calibration": calibration,
                   "load_before": load_before, "load_after": os.getloadavg()[0], "time": time.strftime("%H:%M:%S"),
                   **{k: result[k] for k in ("train_events", "epochs", "best_epoch", "wall_seconds_per_100k",
                                             "cpu_seconds_per_100k", "validation_ndcg@10", "ndcg@10", "recall@50")},
                   "precision": result["report"]["precision"]}
            runs.append(run)
            print(json.dumps(run), flush=True)
            Path(args.out).write_text(json.dumps({"command": sys.argv, "machine": machine_facts(), "runs": runs},
                                                 indent=1) + "\n")
