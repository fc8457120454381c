"""Probe (BENCHMARKS.md "Feed under load", nineteenth round): whether a large `VectorIndex.upsert` uses the threads
it is given, on a copy of a built `bench serve` shop's product index.

Loads SHOP_DIR/products.hnsw, then upserts N new labels (random unit vectors, seed 7) on THREADS threads, timing
each piece (`VectorIndex._add`, which holds the index's lock) and the whole call; CPU of the process meanwhile.
`upsert` sizes its pieces to about ADD_HOLD_SECONDS of hnswlib work: hnswlib adds a piece of 4 x threads vectors
or fewer on one thread, so on an index where a vector takes over 0.6 ms the pieces could stay below that.
A/B: run it with `PYTHONPATH` on the other worktree's checkout; the index is copied, never written.
Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/probes/index_threads.py SHOP_DIR N THREADS OUT.json"""
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import storage.vectors as vectors_module
from appliance.config import load_config
from storage.vectors import VectorIndex

src, n, threads, out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
work = Path(tempfile.mkdtemp(prefix="index-threads-"))
for name in ("products.hnsw", "products.hnsw.json"):
    shutil.copy(src / name, work / name)
config = load_config(overrides={"server": {"data_dir": str(work), "load_demo": False}})
index = VectorIndex(work / "products.hnsw", config.encoder.dim, config.index)
t = time.perf_counter()
index.load()
loaded_s = time.perf_counter() - t
size = len(index)
pieces: list[tuple[int, float]] = []
_add = VectorIndex._add


def timed_add(self, ids, vectors, threads, coming):  # noqa: ANN001, ANN202
    t0 = time.perf_counter()
    _add(self, ids, vectors, threads, coming)
    pieces.append((len(ids), time.perf_counter() - t0))


VectorIndex._add = timed_add
rng = np.random.default_rng(7)
new = rng.standard_normal((n, config.encoder.dim)).astype(np.float32)
new /= np.linalg.norm(new, axis=1, keepdims=True)
labels = np.arange(10**9, 10**9 + n, dtype=np.int64)
cpu0, t0 = os.times(), time.perf_counter()
index.upsert(labels, new, threads=threads)
wall = time.perf_counter() - t0
cpu1 = os.times()
cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
sizes, holds = [p[0] for p in pieces], [1e3 * p[1] for p in pieces]
result = {
    "code": vectors_module.__file__, "index_size": size, "loaded_s": round(loaded_s, 1), "added": n,
    "threads": threads, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cores_busy": round(cpu / wall, 2),
    "ms_per_vector": round(1e3 * wall / n, 3), "pieces": len(pieces),
    "piece_size_p50": statistics.median(sizes), "piece_size_max": max(sizes),
    "hold_ms_p50": round(statistics.median(holds), 2),
    "hold_ms_p99": round(sorted(holds)[int(0.99 * (len(holds) - 1))], 2),
    "hold_ms_max": round(max(holds), 2),
}
print(json.dumps(result, indent=1))
out.write_text(json.dumps(result, indent=1))
shutil.rmtree(work, ignore_errors=True)
