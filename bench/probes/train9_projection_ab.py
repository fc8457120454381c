"""Probe (BENCHMARKS.md "Training", ninth round): a network step's projection of its distinct products, gathered
by slot, by indexing (`inp(distinct)[slot]`, before) against `index_select` (now): forward and backward under
bfloat16 autocast, one thread, the two alternated 5 times in one process (B 512, T 20, U 2,345 distinct products:
shop-100k's mean, D 384, W 128). Prints CPU ms per step of each.
Run: nice -n 10 .venv/bin/python bench/probes/train9_projection_ab.py
"""
import json
import os
import time

import torch

torch.set_num_threads(1)
torch.manual_seed(0)
B, T, D, W, U = 512, 20, 384, 128, 2345
dist = torch.randn(U, D).to(torch.bfloat16)  # (U, D) the batch's distinct history products
slot = torch.randint(U, (B, T))  # (B, T) each slot's row in `dist`
lin = torch.nn.Linear(D, W)


def step(select: bool) -> None:
    with torch.autocast("cpu", torch.bfloat16):
        p = lin(dist)  # (U, W)
        p = p.index_select(0, slot.view(-1)).view(B, T, W) if select else p[slot]  # (B, T, W)
    p.float().sum().backward()


res: dict[str, list[float]] = {"index": [], "index_select": []}
for _ in range(5):
    for name, select in (("index", False), ("index_select", True)):
        step(select)
        start = time.process_time()
        for _ in range(60):
            step(select)
        res[name].append(round((time.process_time() - start) / 60 * 1e3, 2))
print(json.dumps({"ms_per_step": res, "load": os.getloadavg()[0]}))
