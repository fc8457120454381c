"""One-off probe (BENCHMARKS.md "Feed under load", ninth round): thread CPU per event of the write path's stages,
in process, on a copy of `bench serve`'s built 100k shop. Each round: BATCH events written as BATCH/5 requests of 5,
one group-commit transaction each (as at 100 requests/s on a quiet server), then consumer batches (`run_once`)
until they are processed; the first 2 rounds are not counted. Prints the writer's and the consumer's CPU µs per
event and the collector passes in the consumer's part; `profile` adds cProfile of the consumer (`wprofile`: of
the writer). A/B: run it with `PYTHONPATH` on an export of the other commit (`git archive`).
Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/probes/write_path_stages.py SHOP_DIR 22 100 [profile [wprofile]]"""
import cProfile
import gc
import pstats
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from appliance.config import load_config
from appliance.types import Event, now_utc
from jobs.ingest import _Request
from jobs.queue import event_body
from web.services import build_services
from web.startup import _warm_feeds, load_indexes, load_serving_model

src, rounds, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
profile = "profile" in sys.argv[4:]
path = src.with_name(src.name + ".stages")
shutil.rmtree(path, ignore_errors=True)
shutil.copytree(src, path)
config = load_config(overrides={"server": {"data_dir": str(path), "load_demo": False}})
services = build_services(config)
load_indexes(services)
load_serving_model(services)
_warm_feeds(services)
print("serving", services.serving.get().version, sys.modules['appliance'].__file__, flush=True)
rng = np.random.default_rng(5)
names = ("product_viewed", "product_viewed", "product_clicked", "product_added_to_cart")
ids = services.ids


def requests(n):
    out = []
    for _ in range(n // 5):
        c = rng.integers(1, 10_001, 5)
        p = rng.integers(1, 100_001, 5)
        k = rng.integers(0, 4, 5)
        out.append([(str(int(a)), str(int(b)), names[int(x)]) for a, b, x in zip(c, p, k, strict=True)])
    return out


def write(reqs):
    for req in reqs:
        now = now_utc()
        cks = ids.customers.keys([r[0] for r in req], create=True)
        pks = ids.products.keys([r[1] for r in req], create=True)
        events = [Event(c, p, r[2], now) for c, p, r in zip(cks, pks, req, strict=True)]
        bodies = [event_body(e, r[0], r[1]) for e, r in zip(events, req, strict=True)]
        services.ingest._write([_Request(events, bodies, now)])


passes = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
_start = {}
counting = [False]


def _gc(phase, info):
    if not counting[0]:
        return
    if phase == "start":
        _start["t"] = time.thread_time()
    else:
        p = passes[info["generation"]]
        p[0] += 1
        p[1] += time.thread_time() - _start.get("t", time.thread_time())


gc.callbacks.append(_gc)
prof = cProfile.Profile() if profile else None
w_cpu = c_cpu = 0.0
n = 0
for i in range(rounds):
    reqs = requests(batch)
    t = time.thread_time()
    if prof and "wprofile" in sys.argv and i >= 2:
        prof.enable()
    write(reqs)
    if prof and "wprofile" in sys.argv:
        prof.disable()
    t1 = time.thread_time()
    if prof and i >= 2 and "wprofile" not in sys.argv:
        prof.enable()
    got = 0
    counting[0] = i >= 2
    while got < batch:
        got += services.consumer.run_once(0)
    if prof and i >= 2:
        prof.disable()
    t2 = time.thread_time()
    if i >= 2:  # warm-up rounds not counted
        w_cpu += t1 - t
        c_cpu += t2 - t1
        n += batch
print(f"batch {batch}: writer {1e6 * w_cpu / n:.0f} µs/event, consumer {1e6 * c_cpu / n:.0f} µs/event "
      f"({n} events); consumer gc passes "
      + ", ".join(f"gen{g} {c} ({1e3 * t:.1f} ms)" for g, (c, t) in passes.items()))
if prof:
    st = pstats.Stats(prof)
    st.sort_stats("cumulative").print_stats(45)
services.db.close()
shutil.rmtree(path, ignore_errors=True)
