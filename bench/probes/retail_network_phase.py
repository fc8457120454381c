"""One-off probe (BENCHMARKS.md "Retail", fifth round): the shipped `train_tower` on a data set's time split with a
hook at each validation printing the validation NDCG@10, the validation loss (all / positive cold at its moment /
warm), the prior weight, half-life, the norm of `out`, the validation users' mean pairwise cosine, NDCG@10 over a
grid of prior weights, with `out` scaled by 0 / 0.25 / 0.5, and with the residual's mean over the users removed.
CENTER=1 trains with the residual centred (batch mean in training, running mean at evaluation).
Run: PYTHONPATH=. .venv/bin/python bench/probes/retail_network_phase.py retail '{"precision": "float32"}'"""
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import appliance.training as T
from appliance.config import load_config
from appliance.evaluation import time_split
from web.bench.quality import embed, interactions_of, load_dataset

torch.set_num_threads(1)

name = sys.argv[1]
overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
config = load_config(None)
training = dataclasses.replace(config.training, **overrides)
products, events = load_dataset(name, Path("/work/shared/datasets"), config)
vectors = embed(products, config, Path("bench/cache"))
inter = interactions_of(products, events)
split = time_split(inter, config.evaluation.holdout)
weights = dict(config.events.weights)

orig_validate = T._Run._validate
log = []
def _validate(self):
    s = orig_validate(self)
    vl = val_loss(self)
    st = self.average
    log.append(dict(epoch=self.report.epochs, net=self.attention, val=round(s, 4),
                    w=round(float(st["popularity_weight"]), 3), hl=round(float(st["log_half_life"].exp()), 1),
                    kind=[round(float(x), 2) for x in st["kind_bias"]],
                    out=round(float(st["out.weight"].norm()), 3), lr_rate=self.rate, batch=self.batch,
                    loss=round(self.report.losses[-1], 3), **vl))
    print(log[-1], flush=True)
    return s
T._Run._validate = _validate

@torch.no_grad()
def val_loss(run):
    """Mean loss of the validation examples (full softmax, as training's over a small catalog), with the averaged
    weights, overall / positive cold at its moment / the rest."""
    from appliance.examples import batch_inputs
    m = run.model
    trained = {k: v.clone() for k, v in m.state_dict().items()}
    m.load_state_dict(run.average)
    m.eval()
    ex = run.val
    inter = run.interactions
    hist = inter.item[ex.rows]
    seen = torch.as_tensor(np.where(ex.mask, hist, hist[:, -1:]))
    target = torch.as_tensor(inter.item[ex.target])
    users = m(*batch_inputs(ex, inter, run.vectors))
    prior = m.popularity_weight * run.prior.rows(ex)
    own = m.popularity_weight * run.prior.positive(ex)
    cold = run.prior.is_cold(ex)
    out = {}
    for nm, sel in (("vl", np.ones(len(cold), bool)), ("vl_cold", cold), ("vl_warm", ~cold)):
        idx = np.flatnonzero(sel)
        t = torch.as_tensor(idx)
        loss = T.contrastive_loss(users[t], target[t], torch.ones(len(idx)), run.vectors, run.log_q, run.config,
                               run.generator, seen[t], prior[t], None, own[t])
        out[nm] = round(float(loss), 3)
    out["cold_share"] = round(float(cold.mean()), 3)
    from appliance.prior import validation_grid
    grid = [(w, 0.0) for w in (0.08, 0.16, 0.32, 0.48, 0.64, 0.96)]
    rows = validation_grid(m, ex, inter, run.vectors, run.prior, grid)
    out["wgrid"] = [round(float(r[~cold].mean()), 4) for r in rows]  # warm-only NDCG per w
    out["wgrid_all"] = [round(float(r.mean()), 4) for r in rows]
    w0 = m.out.weight.clone()
    lam = []
    for f in (0.0, 0.25, 0.5):
        m.out.weight.copy_(w0 * f)
        r = validation_grid(m, ex, inter, run.vectors, run.prior, [(float(m.popularity_weight), 0.0)])[0]
        lam.append(round(float(r.mean()), 4))
    m.out.weight.copy_(w0)
    out["lam"] = lam
    inp = batch_inputs(ex, inter, run.vectors)
    u = m(*inp)
    u0 = m(*inp, attention=False)
    out["ucos"] = round(float((u @ u.T).mean()), 3)
    out["u0cos"] = round(float((u0 @ u0.T).mean()), 3)
    # the residual's user-independent part: remove it and rank again (probe only)
    hook = {}
    def fwd(mod, a, o):
        return o - o.mean(0, keepdim=True) if hook.get("on") else o
    h = m.out.register_forward_hook(fwd)
    hook["on"] = True
    r = validation_grid(m, ex, inter, run.vectors, run.prior, [(float(m.popularity_weight), 0.0)])[0]
    hook["on"] = False
    h.remove()
    out["centered"] = round(float(r.mean()), 4)
    m.load_state_dict(trained)
    m.train()
    return out
CENTER = os.environ.get("CENTER") == "1"
if CENTER:  # BatchNorm-style centering of the residual (probe): batch mean in training, its running mean in eval
    orig_init = T.UserTower.__init__
    def init(self, *a, **k):
        orig_init(self, *a, **k)
        self.register_buffer("center", torch.zeros(self.dim))
        def hook(mod, args, o):
            if self.training:
                mu = o.mean(0)
                with torch.no_grad():
                    self.center.lerp_(mu.detach().float(), 0.02)
                return o - mu
            return o - self.center
        self.out.register_forward_hook(hook)
    T.UserTower.__init__ = init
t0 = time.process_time()
model, report = T.train_tower(split.train, vectors, config.tower, training, weights, training.prior_half_life_hours)
cpu = time.process_time() - t0
print("kept", report.best_epoch, "top", report.top_epoch, "val", round(report.best_validation_ndcg, 4),
      "w", round(report.popularity_weight, 3), "cpu", round(cpu, 1), "train_s", round(report.train_seconds, 1))
