"""Synthetic shops for the benchmarks: a data dir with N products, their vectors, shoppers' vectors, events.

Products look like the demo shop's (same category tree, brands, price spread, 6 % created in the last week and
the rest over 90 days) but every vector is synthetic: random unit vectors in clusters, one cluster per ~100
products, each cluster tied to one subcategory. Everything goes through the appliance's own stores
(`CatalogStore.upsert` / `save_vectors`, `UserStore.save`, `EventStore.append`) and the hnswlib indexes are
built before the server starts, so the server's start-up reconcile only loads them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import load_config
from appliance.demo_catalog import subcategories
from appliance.text import product_text, text_hash
from appliance.types import EVENT_NAMES, Event, Product, now_utc
from storage.catalog import CatalogStore
from storage.db import Database
from storage.events import EventStore
from storage.ids import IdMap, ShopIds
from storage.users import UserStore
from storage.vectors import VectorIndex

CHUNK = 20_000
NOISE = 0.75  # a member's cosine to its cluster centre is ~1/sqrt(1 + NOISE^2) = 0.8
# Event mix (the demo shop's action shares).
EVENT_SHARES = (0.62, 0.23, 0.08, 0.025, 0.015, 0.03)


@dataclass(frozen=True)
class Shop:
    products: int
    customers: int  # customers 1..customers have a fresh user vector (personalised feeds)
    events: int
    seed: int = 7

    @property
    def name(self) -> str:
        return f"shop-p{self.products}-c{self.customers}-e{self.events}-s{self.seed}"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def centres(rng: np.random.Generator, n_clusters: int, dim: int) -> np.ndarray:
    return unit(rng.standard_normal((n_clusters, dim), dtype=np.float32))


def members(
    rng: np.random.Generator, centre_vectors: np.ndarray, labels: np.ndarray, noise: float = NOISE
) -> np.ndarray:
    """Unit vectors around the given cluster centres (one row per label)."""
    dim = centre_vectors.shape[1]
    jitter = rng.standard_normal((len(labels), dim), dtype=np.float32) * (noise / math.sqrt(dim))
    return unit(centre_vectors[labels] + jitter)


def catalog_products(rng: np.random.Generator, ids: np.ndarray, clusters: np.ndarray, now: datetime) -> list[Product]:
    leaves = subcategories()
    colors = ("Black", "White", "Grey", "Navy", "Blue", "Red", "Green", "Beige", "Brown", "Pink", "Yellow", "Silver")
    new = rng.random(len(ids)) < 0.06
    ages = np.where(new, rng.uniform(0, 7 * 86400, len(ids)), rng.uniform(7 * 86400, 90 * 86400, len(ids)))
    spread = rng.lognormal(0.0, 0.55, len(ids))
    stock = rng.random(len(ids)) >= 0.07
    picks = rng.integers(0, 1 << 30, (len(ids), 3))
    out = []
    for i, pid in enumerate(ids.tolist()):
        path, brands, models, noun, median = leaves[int(clusters[i]) % len(leaves)]
        brand = brands[picks[i, 0] % len(brands)]
        out.append(Product(
            pid, f"{brand} {models[picks[i, 1] % len(models)]} {noun} {pid}", brand, path,
            colors[picks[i, 2] % len(colors)], math.floor(max(3.0, median * spread[i])) + 0.99, bool(stock[i]),
            now - timedelta(seconds=float(ages[i])),
        ))
    return out


def build_shop(root: Path, shop: Shop, log: Any = print) -> Path:
    """The data dir of `shop` under `root` (reused when already complete); its facts are in `shop.json`.

    Built in two steps: the DuckDB part (products, vectors, shoppers, events; `stored.json` marks it complete),
    then the hnswlib indexes. A build cut short during the indexes (~20 min of a 1M shop) resumes there."""
    path = Path(root) / shop.name
    if (path / "shop.json").exists():
        return path
    stored = path / "stored.json"
    if path.exists() and not stored.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config = load_config(overrides={"server": {"data_dir": str(path), "load_demo": False}})
    db = Database(path / "appliance.duckdb")
    try:
        store, users = CatalogStore(db), UserStore(db)
        if not stored.exists():
            now = now_utc()
            _store(db, store, users, shop, config, now, log)
            stored.write_text(json.dumps({"built_at": now.isoformat(), "seconds": round(time.perf_counter() - t0, 1)}))
        facts = json.loads(stored.read_text())
        t1 = time.perf_counter()
        _index(path, config.encoder.dim, config.index, store.vectors, "products.hnsw")
        _index(path, config.encoder.dim, config.index, users.vectors, "users.hnsw")
    finally:
        db.close()
    facts = {**shop.__dict__, "clusters": _clusters(shop), "noise": NOISE, "built_at": facts["built_at"],
             "store_seconds": facts["seconds"], "index_seconds": round(time.perf_counter() - t1, 1)}
    facts["build_seconds"] = round(facts["store_seconds"] + facts["index_seconds"], 1)
    (path / "shop.json").write_text(json.dumps(facts, indent=1))
    log(f"  {shop.name}: built in {facts['build_seconds']} s (DuckDB {facts['store_seconds']} s, "
        f"indexes {facts['index_seconds']} s)")
    return path


def _clusters(shop: Shop) -> int:
    return max(8, shop.products // 100)


def _store(db: Database, store: CatalogStore, users: UserStore, shop: Shop, config: Any, now: datetime,
           log: Any) -> None:
    """Products with their vectors, shoppers with theirs, and the events, into DuckDB."""
    model, thresholds = config.encoder.model, config.catalog.tier_thresholds
    rng = np.random.default_rng(shop.seed)
    n_clusters = _clusters(shop)
    centre_vectors = centres(rng, n_clusters, config.encoder.dim)
    shop_ids = ShopIds.open(db)
    for start in range(0, shop.products, CHUNK):
        ids = np.arange(start + 1, min(start + CHUNK, shop.products) + 1, dtype=np.int64)
        _map(shop_ids.products, ids)
        clusters = rng.integers(0, n_clusters, len(ids))
        products = catalog_products(rng, ids, clusters, now)
        texts = [product_text(p, thresholds) for p in products]
        hashes = [text_hash(model, t) for t in texts]
        store.upsert(products, texts, hashes, now - timedelta(seconds=1))
        store.save_vectors(hashes, members(rng, centre_vectors, clusters))
        log(f"  {shop.name}: {ids[-1]:,} / {shop.products:,} products stored")
    for start in range(0, shop.customers, CHUNK):
        ids = np.arange(start + 1, min(start + CHUNK, shop.customers) + 1, dtype=np.int64)
        _map(shop_ids.customers, ids)
        vectors = members(rng, centre_vectors, rng.integers(0, n_clusters, len(ids)), noise=1.0)
        users.save(ids.tolist(), vectors, "mean", [now] * len(ids), now)
    _events(rng, EventStore(db), shop, now)
    touch_last(store, users, now)
    log(f"  {shop.name}: stored in DuckDB; building the indexes")


def _map(ids: IdMap, keys: np.ndarray) -> None:
    """The shop's ids are the numbers ("17"); in a new store the map hands out the same numbers as keys."""
    if ids.keys([str(k) for k in keys.tolist()], create=True) != keys.tolist():
        raise RuntimeError("a synthetic shop is built in an empty store")


def _events(rng: np.random.Generator, store: EventStore, shop: Shop, now: datetime) -> None:
    for batch in event_batches(rng, shop, now):
        store.append(batch, now)


def event_batches(rng: np.random.Generator, shop: Shop, now: datetime) -> Iterator[list[Event]]:
    """Events over the last 7 days from customers 1..customers, on Zipf-like popular products (100k a batch)."""
    if not shop.events or not shop.customers:
        return
    ranks = np.arange(1, shop.products + 1, dtype=np.float64)
    weights = 1.0 / ranks**0.9
    cumulative = np.cumsum(weights / weights.sum())
    popular_ids = rng.permutation(shop.products) + 1  # which product holds which popularity rank
    shares = np.cumsum(EVENT_SHARES) / sum(EVENT_SHARES)
    for start in range(0, shop.events, 100_000):
        n = min(100_000, shop.events - start)
        customers = rng.integers(1, shop.customers + 1, n)
        products = popular_ids[np.minimum(np.searchsorted(cumulative, rng.random(n)), shop.products - 1)]
        names = np.minimum(np.searchsorted(shares, rng.random(n)), len(EVENT_NAMES) - 1)
        ages = rng.uniform(60, 7 * 86400, n)
        yield [Event(int(c), int(p), EVENT_NAMES[k], now - timedelta(seconds=float(a)))
               for c, p, k, a in zip(customers, products, names, ages, strict=True)]


def _index(path: Path, dim: int, index_config: Any, changed_since: Any, name: str) -> None:
    """What `IndexMirror.reconcile` does on a missing index, inserting with every core (hnswlib threads)."""
    index = VectorIndex(path / name, dim, index_config)
    index.reset()
    ids, vectors, done = changed_since(None)
    index.upsert(ids, vectors, threads=os.cpu_count() or 1)  # the appliance syncs on `torch_threads`: same graph
    index.synced_until = done
    index.save()


def touch_last(store: CatalogStore, users: UserStore, now: datetime) -> None:
    """Store the last product and the last user vector once more, alone, a moment later (same vector).

    A sync asks for rows with `updated_at >= synced_until` and moves `synced_until` to the newest change,
    so every sync inserts the newest batch again. Written in a few bulk batches sharing timestamps, a shop
    would have the server re-insert a whole batch into hnswlib at every start and every background sync,
    holding the index lock for minutes at 100k (a finding of this benchmark; a shop loaded by one
    `appliance import` is in that state). A last batch of one row keeps the benchmark at steady state.
    """
    later = now + timedelta(milliseconds=1)
    last = store.db.read("SELECT max(product_id) FROM products")[0][0]
    if last is not None:
        stored = store.get(last)
        flipped = replace(stored.product, in_stock=not stored.product.in_stock)  # not part of the text line
        h = store.db.read("SELECT text_hash FROM products WHERE product_id = ?", [last])[0][0]
        store.upsert([flipped], [stored.text], [h], later)
    ids, vectors, _ = users.vectors(None)
    if len(ids):
        users.save([int(ids[-1])], vectors[-1:], "mean", [now], later)


def fresh_copy(built: Path) -> Path:
    """The built shop copied for this run (the build itself stays as built): a run's write streams leave events
    queued and shoppers changed, and a server started on them spends its first minutes on that backlog, inside
    the next run's quiet phase (79,245 queued events were found in a 100k shop reused across runs)."""
    run = built.with_name(built.name + ".run")
    lists = run / "products.hnsw.lists"  # the neighbour lists the last run saved: checked against the index at start
    if lists.exists():
        shutil.copyfile(lists, built / lists.name)
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(built, run)
    return run
