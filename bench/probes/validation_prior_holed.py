"""One-off probe (BENCHMARKS.md "Retail", fifth round): the untrained tower's validation NDCG@10 over prior weights,
with the validation prior complete (as training has it) and holed as the test's is (each validation customer's
events from its validation moment on left out).
Run: PYTHONPATH=. .venv/bin/python bench/probes/validation_prior_holed.py retail"""
import sys
from pathlib import Path

import numpy as np
import torch

from appliance.config import load_config
from appliance.evaluation import time_split
from appliance.examples import MomentPrior, make_examples, split_validation
from appliance.prior import validation_grid
from appliance.tower import UserTower
from appliance.types import EVENT_NAMES
from web.bench.quality import embed, interactions_of, load_dataset

torch.set_num_threads(1)

config = load_config(None)
name = sys.argv[1]
products, events = load_dataset(name, Path("/work/shared/datasets"), config)
vectors = embed(products, config, Path("bench/cache"))
inter = interactions_of(products, events)
train = time_split(inter, config.evaluation.holdout).train
t = config.training
rng = np.random.default_rng(t.seed)
ex = make_examples(train, config.tower.history)
tr, val = split_validation(ex, train, t.validation_fraction, rng, t.validation_examples)
weights = dict(config.events.weights)
# holed: drop each validation customer's events from its validation moment on
cut = np.full(train.customer.max() + 1, np.inf)
cut[train.customer[val.target]] = train.ts[val.target]
keep = train.ts < cut[train.customer]
holed_inter = train.take(keep)
V = torch.as_tensor(vectors)
model = UserTower(config.tower, V.shape[1])
with torch.no_grad():
    model.kind_bias.copy_(torch.log(torch.as_tensor([weights[n] for n in EVENT_NAMES])))
grid = [(w, 0.0) for w in (0.04, 0.08, 0.16, 0.24, 0.32, 0.48, 0.64)]
complete = MomentPrior(train, len(vectors), weights, t.prior_half_life_hours)
holed = MomentPrior(holed_inter, len(vectors), weights, t.prior_half_life_hours)
# the holed prior scorer is queried by the validation examples' (customer, moment): rows() reads train's arrays
holed.interactions = train
for label, prior in (("complete", complete), ("holed", holed)):
    rows = validation_grid(model, val, train, V, prior, grid)
    means = rows.mean(1)
    means_by_weight = {w: round(float(m), 4) for (w, _), m in zip(grid, means, strict=True)}
    print(name, label, "hidden share", round(1 - keep.mean(), 3), means_by_weight,
          "best w", grid[int(means.argmax())][0])
