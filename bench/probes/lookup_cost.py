"""Probe (BENCHMARKS.md "Feed under load", fourteenth round): `VectorIndex.lookup`'s CPU for 2,000 random products
and the process's memory (VmRSS, RssAnon, RssFile) after loading the index and after reading every vector once.
A/B: run it with `PYTHONPATH` on an export of the other commit (`git archive`); the probe file is the same.
Run: PYTHONPATH=. .venv/bin/python bench/probes/lookup_cost.py SHOP_DIR/products.hnsw OUT.json"""
import json
import sys
import time

import numpy as np

from appliance.config import load_config
from storage.vectors import VectorIndex


def rss() -> dict[str, str]:
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return {k: status[k].strip() for k in ("VmRSS", "RssAnon", "RssFile")}


result: dict = {"code": sys.modules["storage"].__file__}
index = VectorIndex(sys.argv[1], load_config().encoder.dim, load_config().index)
result["before_load"] = rss()
print("before load", result["before_load"])
assert index.load() is None
result["loaded"] = rss()
print("loaded", len(index), "vectors", result["loaded"])
rng = np.random.default_rng(3)
cpu = time.thread_time()
for _ in range(50):
    index.lookup(rng.integers(1, len(index) + 1, 2000))
result["lookup_2000_cpu_ms"], result["after_lookups"] = round((time.thread_time() - cpu) / 50 * 1e3, 2), rss()
print("lookup of 2,000: CPU ms", result["lookup_2000_cpu_ms"], result["after_lookups"])
for start in range(0, len(index), 5000):
    index.lookup(np.arange(start + 1, start + 5001))
result["every_vector_read"] = rss()
print("every vector read once", result["every_vector_read"])
with open(sys.argv[2], "w") as f:
    json.dump(result, f, indent=1)
