"""Probe (BENCHMARKS.md "Feed under load", sixteenth round): the consumer's feed preparation for a batch of 100
shoppers on a built `bench serve` shop, split into the batched hnswlib search and the making of the lists (catalog
rows and "because you viewed" anchors) from its result, in thread CPU. The shop's catalog is read from a copy of
its DuckDB file; each shopper's history is 20 products of its user's own nearest products (so anchors are found).
A/B: run it with `PYTHONPATH` on a checkout of the other commit; the probe file is the same.
Run: PYTHONPATH=. .venv/bin/python bench/probes/nearest_lists.py SHOP_DIR OUT.json"""
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.config import load_config
from appliance.nearest_cache import NearestCache
from storage.catalog import CatalogStore
from storage.db import Database
from storage.vectors import VectorIndex

shop, out = Path(sys.argv[1]), Path(sys.argv[2])
config = load_config()
with tempfile.TemporaryDirectory() as tmp:
    shutil.copy(shop / "appliance.duckdb", Path(tmp) / "a.duckdb")
    db = Database(Path(tmp) / "a.duckdb")
    view = CatalogView(CatalogStore(db).all())
    db.close()
index = VectorIndex(shop / "products.hnsw", config.encoder.dim, config.index)
assert index.load() is None
rng = np.random.default_rng(5)
BATCH, DEPTH, REPS = 100, config.feed.personal_first_depth, 30
ef = config.feed.personal_first_ef
batches = []
for _ in range(REPS):
    picked = index.get(rng.integers(1, len(index) + 1, BATCH))
    vectors = picked + 0.05 * rng.standard_normal(picked.shape)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids, sims = index.query_many(vectors, DEPTH, ef)
    histories = [tuple(rng.choice(row, 20, replace=False).tolist()) for row in ids]
    batches.append((vectors, ids, sims, histories))
search = time.thread_time()
for vectors, *_ in batches:
    index.query_many(vectors, DEPTH, ef)
search = (time.thread_time() - search) / REPS
made = 0.0
for rep, (vectors, ids, sims, histories) in enumerate(batches):
    cache = NearestCache(lambda v, k, ids=ids, sims=sims: (ids, sims), config.feed.personal_depth, 10 * BATCH)
    wanted = [((rep, i), v, lambda h=h: h) for i, (v, h) in enumerate(zip(vectors, histories, strict=True))]
    start = time.thread_time()
    cache.prepare(wanted, view, DEPTH)
    made += time.thread_time() - start
anchored = sum(len(cache._found[(REPS - 1, i)].anchors) for i in range(BATCH)) / BATCH
result = {"code": sys.modules["appliance"].__file__, "products": len(view), "batch": BATCH, "depth": DEPTH,
          "search_ms_per_batch": round(1e3 * search, 2), "lists_ms_per_batch": round(1e3 * made / REPS, 2),
          "anchors_per_shopper": anchored}
print(json.dumps(result))
out.write_text(json.dumps(result, indent=1))
