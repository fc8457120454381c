"""One-off probe (BENCHMARKS.md "Retail", sixth round): CPU seconds of `train_tower` on a data set's quality split,
main's recipe (scalar_temperature = temperature, patience_within 0) and the shipped one, alternated in one window.
Run: PYTHONPATH=. .venv/bin/python bench/probes/quality6_train_ab.py retail 2"""
import dataclasses
import sys
import time
from pathlib import Path

import torch

from appliance.config import load_config
from appliance.evaluation import time_split
from appliance.training import train_tower
from web.bench.quality import embed, interactions_of, load_dataset

torch.set_num_threads(1)
name, rounds = sys.argv[1], int(sys.argv[2])
config = load_config(None)
products, events = load_dataset(name, Path("/work/shared/datasets"), config)
vectors = embed(products, config, Path("bench/cache"))
split = time_split(interactions_of(products, events), config.evaluation.holdout)
old = dataclasses.replace(config.training, scalar_temperature=config.training.temperature, patience_within=0.0)
recipes = {"old": old, "new": config.training}
for _ in range(rounds):
    for label, training in recipes.items():
        t0, w0 = time.process_time(), time.perf_counter()
        _, report = train_tower(split.train, vectors, config.tower, training, dict(config.events.weights),
                                training.prior_half_life_hours)
        print(label, f"cpu_s {time.process_time() - t0:.1f} wall_s {time.perf_counter() - w0:.1f}",
              f"epochs {report.epochs} scalar {report.scalar_epochs} kept {report.best_epoch}",
              f"val {report.best_validation_ndcg:.4f}", flush=True)
