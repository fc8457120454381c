"""One-off probe (BENCHMARKS.md "Retail", fifth round): the share of the 30-day popularity before each test moment
that lies in other customers' test events, which the evaluation's training-only popularity leaves out.
Run: PYTHONPATH=. .venv/bin/python bench/probes/prior_holes_at_test.py"""
from pathlib import Path

import numpy as np

from appliance.config import load_config
from appliance.evaluation import test_targets, time_split
from web.bench.quality import interactions_of, load_dataset

config = load_config(None)
for name in ("retail", "demo", "movielens"):
    products, events = load_dataset(name, Path("/work/shared/datasets"), config)
    inter = interactions_of(products, events)
    split = time_split(inter, config.evaluation.holdout)
    customers, at, rel, relm = test_targets(split, len(products), None)
    hl = 720 * 3600.0
    tr, te = split.train.ts, split.test.ts
    def mass(ts, t, hl=hl):
        d = t - ts[ts < t]
        return np.exp2(-d / hl).sum()
    share = [mass(te, t) / (mass(te, t) + mass(tr, t)) for t in at[:: max(1, len(at)//400)]]
    print(name, "test customers", len(at), "share of 30-day popularity before the test moment in others' test events:",
          round(float(np.mean(share)), 3), "median", round(float(np.median(share)), 3))
