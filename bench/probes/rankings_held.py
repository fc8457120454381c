"""Probe (BENCHMARKS.md "Tenth round"): tracked `Ranking`s held after edits of existing products and after writes that
create products, a feed asked after each (its snapshot keeps the ranking current then). In process, synthetic catalog.
Run: .venv/bin/python bench/probes/rankings_held.py 100000"""
import gc
import sys
from datetime import datetime

import numpy as np

from appliance.pipeline import FeedQuery
from appliance.ranking import Ranking
from appliance.recommender import FeedSettings, Recommender
from appliance.types import Product

N = int(sys.argv[1])
products = [Product(i, f"p{i}", "m", ("A", "B"), "red", 10.0 + i % 7, True, datetime(2026, 1, 1))
            for i in range(1, N + 1)]
catalog = {p.product_id: p for p in products}
settings = FeedSettings(0.6, 0.1, 30.0, 200, True, 600.0, 10000, 20000, 60, 2, "brand")
rng = np.random.default_rng(0)
pop_ids = np.arange(1, N + 1)
pop = rng.random(N)
rec = Recommender(lambda: list(catalog.values()), lambda now: (pop_ids, pop),
                  lambda v, k: (np.zeros((len(v), 0), np.int64), np.zeros((len(v), 0))), lambda: datetime(2026, 6, 1),
                  3600.0, settings)
rec.feed(FeedQuery())


def count():
    gc.collect()
    return sum(type(o) is Ranking for o in gc.get_objects())


def size(r):
    arrays = [r.order, r.rank, r.popularity, r.new_rows, r.freshness]
    return sum(a.nbytes for a in arrays), (r.prior.values.nbytes + r.prior.known.nbytes) if r.prior else 0
print("start", count(), "bytes per ranking (own, prior)", size(rec.live._ranking))
for i in range(50):  # edits of existing products, a feed after each
    pid = 1 + i
    catalog[pid] = Product(pid, f"p{pid}", "m", ("A", "B"), "red", 99.0, False, datetime(2026, 1, 1))
    rec.apply_changes([pid], lambda ids: [catalog[i] for i in ids])
    rec.feed(FeedQuery())
print("after 50 edits of existing products", count(), "snapshots", len(rec._snapshots))
for i in range(20):  # creating writes, a feed after each
    pid = N + 1 + i
    catalog[pid] = Product(pid, f"p{pid}", "m", ("A", "B"), "red", 5.0, True, datetime(2026, 5, 30))
    rec.apply_changes([pid], lambda ids: [catalog[i] for i in ids])
    rec.feed(FeedQuery())
print("after 20 new products", count(), "snapshots", len(rec._snapshots))
