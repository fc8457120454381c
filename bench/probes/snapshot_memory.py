"""Probe (BENCHMARKS.md "Feed snapshot memory"): the bytes feed snapshots hold across popularity refreshes, and
the feed's thread CPU per request. In process, synthetic catalog of N products, steady traffic: M refreshes,
each followed by S new feeds (page 1, a new feed_id each) and their page 2, a category page and a price-sorted
page; every snapshot stays within `feed.snapshot_seconds`. `upload`: the catalog grows from empty to N products
in M writes that create products (each makes a ranking, as a bulk upload does), S feeds after each.
Held: the unique numpy buffers reachable from the snapshots (each counted once),
and the process's RSS growth; the current ranking field by field, the price orders and the current catalogue.
Runs on any checkout: PYTHONPATH=<checkout> selects the code measured.
Run: nice -n 10 .venv/bin/python bench/probes/snapshot_memory.py 100000 60 50 [out.jsonl] [upload]"""

import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
from datetime import datetime

import msgspec
import numpy as np

from appliance.pipeline import FeedQuery
from appliance.recommender import FeedSettings, Recommender
from appliance.types import Product

N, M, S = (int(a) for a in sys.argv[1:4])
OUT = sys.argv[4] if len(sys.argv) > 4 else None
UPLOAD = len(sys.argv) > 5 and sys.argv[5] == "upload"
PATHS = [("Shoes", "Sneakers"), ("Home", "Pots"), ("Toys", "Lego")]
MONTH = 5 if UPLOAD else 1  # an upload's products are new arrivals
products = [Product(i, f"p{i}", f"brand{i % 97}", PATHS[i % 3], "red", 10.0 + i % 50, i % 5 != 0,
                    datetime(2026, MONTH, 1 + i % 28)) for i in range(1, N + 1)]
catalog = {} if UPLOAD else {p.product_id: p for p in products}
settings = FeedSettings(0.6, 0.1, 30.0, 200, True, 600.0, 100000, 20000, 60, 2, "brand")
rng = np.random.default_rng(0)
ids = np.arange(1, N + 1)
state = {"pop": rng.random(N)}
rec = Recommender(lambda: list(catalog.values()), lambda now: (ids, state["pop"]),
                  lambda v, k: (np.zeros((len(v), 0), np.int64), np.zeros((len(v), 0))), lambda: datetime(2026, 6, 1),
                  3600.0, settings)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def held(roots) -> int:
    """Bytes of the unique array buffers reachable from `roots` (a view counts its base once)."""
    return sum(buffers(roots).values())


def buffers(roots) -> dict[int, int]:
    """The unique array buffers reachable from `roots`: id of the base -> its bytes."""
    seen, buffers, stack = set(), {}, list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (int, float, str, bool, bytes)):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            buffers[id(base)] = base.nbytes
        elif isinstance(obj, msgspec.Struct):
            stack.extend(getattr(obj, f) for f in obj.__struct_fields__)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
    return buffers


def mib(found: dict[int, int]) -> float:
    return round(sum(found.values()) / 2**20, 2)


def current_parts(rec) -> dict:
    """The current ranking's arrays field by field (buffers the catalog view holds too counted apart), the
    price orders and the current catalogue (what neither the ranking nor the view holds)."""
    live = getattr(rec, "live", rec)  # before the split, the recommender held these itself
    ranking, view = live._ranking, live._view
    in_view = buffers([getattr(view, "_newest", None)] + [v for v in vars(view).values() if isinstance(v, np.ndarray)])
    parts, own = {}, {}
    for field in dataclasses.fields(ranking):
        found = {k: v for k, v in buffers([getattr(ranking, field.name)]).items() if k not in in_view and k not in own}
        own.update(found)
        parts[field.name] = mib(found)
    shared = {k: v for k, v in buffers([ranking]).items() if k in in_view}
    catalogue = {k: v for k, v in buffers([rec._catalogued]).items() if k not in own and k not in in_view}
    return {"ranking_fields_mib": parts, "ranking_own_mib": mib(own), "ranking_shared_with_view_mib": mib(shared),
            "price_orders_mib": mib(buffers([live._prices])), "catalogue_beyond_ranking_mib": mib(catalogue)}


commit = subprocess.run(["git", "-C", os.environ.get("PYTHONPATH") or ".", "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True).stdout.strip()
rec.feed(FeedQuery())
gc.collect()
rss0, cpu, requests = rss_kib(), 0.0, 0
for step in range(M):
    if UPLOAD:  # one write creating the next N / M products
        chunk = products[step * N // M:(step + 1) * N // M]
        catalog.update((p.product_id, p) for p in chunk)
        rec.apply_changes([p.product_id for p in chunk], lambda pids: [catalog[i] for i in pids])
    else:
        state["pop"] = state["pop"] * 0.99 + rng.random(N) * 0.05  # events moved some products
        rec.refresh_popularity()
    for _ in range(S):
        t0 = time.thread_time()
        first = rec.feed(FeedQuery(per_page=20))
        rec.feed(FeedQuery(page=2, per_page=20, feed_id=first.feed_id))
        rec.feed(FeedQuery(per_page=20, categories=("Lego",)))
        rec.feed(FeedQuery(per_page=20, sort="price_asc", max_price=30.0))
        cpu += time.thread_time() - t0
        requests += 4
# the oldest snapshots' later pages, after every refresh: the same feed_id answers (page 3)
kept = sum(rec.feed(FeedQuery(page=3, per_page=20, feed_id=fid)).feed_id == fid
           for fid in list(rec._snapshots)[:100])
gc.collect()
result = {
    "code": os.environ.get("PYTHONPATH") or "this checkout", "commit": commit, "products": N,
    "mode": "upload" if UPLOAD else "refreshes", "steps": M,
    "feeds_per_refresh": S, "snapshots": len(rec._snapshots),
    "held_by_snapshots_mib": round(held(rec._snapshots.values()) / 2**20, 2),
    "held_by_recommender_mib": mib(buffers([rec._snapshots, getattr(rec, "live", rec)._ranking, rec._catalogued])),
    **current_parts(rec),
    "rss_growth_mib": round((rss_kib() - rss0) / 1024, 1),
    "feed_cpu_ms_per_request": round(1000 * cpu / requests, 3), "requests": requests,
    "oldest_100_page3_same_feed_id": kept,
}
print(json.dumps(result))
if OUT:
    with open(OUT, "a") as f:
        f.write(json.dumps(result) + "\n")
