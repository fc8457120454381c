"""Probe (BENCHMARKS.md "Sixth round (branch `upload9`)"): product edits during a bulk upload, in process (real DuckDB,
the real MiniLM on one torch thread, real hnswlib, the server's own write path without HTTP):
`python bench/probes/upload_edits.py OUT.json [--products 8000] [--every 2.0] [--chunk 500] [--folder DIR]`.

The upload posts `products` new products in chunks of `chunk` as `POST /products` does (stored in one transaction
each, embedding left to the background indexer, which is kicked), as fast as they commit. Meanwhile one edit every
`every` seconds goes through `EditCommit` as `PUT /products/{id}` does: an uploaded product gets a new name (a new
text line: committed, encoded, put in the index before its answer). Each edit's latency is split into its stages
(the writer's commit; the encoding, itself split into the wait for the model's turn, its own batch and the vector's
write; the wait for the mirror's lock, the put under it, the answer); the mirror lock's holds and waits per thread,
the rows each index sync read, products/s to the end of embedding and VmHWM are printed and written to OUT.json.
Run the code before a change with `PYTHONPATH=<its checkout>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from appliance.config import load_config
from appliance.encoder import Encoder
from appliance.types import now_utc
from jobs.catalog import CatalogService
from jobs.edits import EditCommit
from jobs.indexing import BackgroundIndexer, CatalogIndexer
from storage.catalog import CatalogStore
from storage.db import Database
from storage.vectors import VectorIndex
from web.bench.common import percentiles
from web.bench.synth import catalog_products

STAMPS: dict[str, float] = {}  # the edit in flight (one at a time): stage -> perf_counter


def stamp(stage: str) -> None:
    if threading.current_thread().name == "catalog-embedder":
        STAMPS[stage] = time.perf_counter()


class TimedLock:
    """The mirror's Lock, with each acquire's wait and hold recorded per thread name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0
        self.waits: dict[str, list[float]] = defaultdict(list)
        self.holds: dict[str, list[float]] = defaultdict(list)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        name = threading.current_thread().name
        if name == "catalog-embedder":
            STAMPS["lock_asked"] = time.perf_counter()
        t0 = time.perf_counter()
        got = self._lock.acquire(blocking, timeout)
        self._since = time.perf_counter()
        self.waits[name].append((self._since - t0) * 1000)
        if name == "catalog-embedder":
            STAMPS["lock_got"] = self._since
        return got

    def release(self) -> None:
        name = threading.current_thread().name
        now = time.perf_counter()
        self.holds[name].append((now - self._since) * 1000)
        if name == "catalog-embedder":
            STAMPS["put_done"] = now
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def census(db: Database, index: VectorIndex) -> dict[str, float]:
    """What holds the RSS at the end: the process's resident and anonymous memory, DuckDB's own accounting, the
    index's graph and vectors (hnswlib's element size times its capacity)."""
    rollup = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in
              Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]}
    duck = sum(row[0] for row in db.read("SELECT memory_usage_bytes FROM duckdb_memory()")) / 2**20
    graph = index._index
    per_element = graph.dim * 4 + graph.M * 2 * 4 + 8 + 4 + 4 * graph.M + 8  # data, level-0 links, label, upper links
    return {"rss": round(rollup.get("Rss", 0), 1), "anonymous": round(rollup.get("Anonymous", 0), 1),
            "duckdb": round(duck, 1), "index_estimate": round(graph.get_max_elements() * per_element / 2**20, 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--products", type=int, default=8000)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/upload-edits-probe"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(overrides={"server": {"load_demo": False}})
    args.folder.mkdir(parents=True, exist_ok=True)
    for old in args.folder.glob("*"):
        old.unlink()
    db = Database(args.folder / "probe.duckdb")
    store = CatalogStore(db)
    encoder = Encoder(config.encoder.model, config.encoder.dim, config.encoder.batch_size)
    encoder.encode(["warm up"])
    index = VectorIndex(args.folder / "products.hnsw", config.encoder.dim, config.index)
    indexer = CatalogIndexer(store, encoder, index, config.encoder.background_batch, 1)
    lock = TimedLock()
    indexer.mirror._lock = lock  # the probe's clock around the mirror's lock; every change still takes it
    syncs: list[dict] = []
    changed_since = indexer.mirror.changed_since

    def counted(since):  # rows each sync read, and its wall time from first page to last
        t0, rows = time.perf_counter(), 0
        for page in changed_since(since):
            rows += len(page[0])
            yield page
        syncs.append({"rows": rows, "seconds": round(time.perf_counter() - t0, 2),
                      "thread": threading.current_thread().name})

    indexer.mirror.changed_since = counted
    catalog = CatalogService(store, indexer, config.catalog.tier_thresholds)
    background = BackgroundIndexer(indexer, lambda exc: print("indexer error", exc, flush=True))
    background.start()
    edits = EditCommit(catalog)
    write = edits._write

    def timed_write(group):  # the writer's commit of the edit's group
        write(group)
        STAMPS["committed"] = time.perf_counter()

    edits._write = timed_write
    embed_lines = indexer.embed_lines

    def timed_embed(lines):
        got = embed_lines(lines)
        if threading.current_thread().name == "catalog-embedder":
            STAMPS["encoded"] = time.perf_counter()
        return got

    indexer.embed_lines = timed_embed
    turn, save_vectors = encoder._turns.turn, store.save_vectors

    @contextmanager
    def timed_turn():  # the encoding stage split: the wait for the model's turn, the batch, the vectors' write
        stamp("turn_asked")
        with turn():
            stamp("turn_got")
            yield
        stamp("encoded_only")

    def timed_save(hashes, vectors):
        save_vectors(hashes, vectors)
        stamp("saved")

    encoder._turns.turn, store.save_vectors = timed_turn, timed_save
    products = catalog_products(np.random.default_rng(5), np.arange(1, args.products + 1),
                                np.arange(args.products) % 97, now_utc())
    posted = [0]
    t_start = time.perf_counter()

    def upload() -> None:
        for start in range(0, len(products), args.chunk):
            catalog.upsert(products[start:start + args.chunk], now_utc(), embed_now=False)
            posted[0] = start + args.chunk
            background.kick()

    uploader = threading.Thread(target=upload, name="upload")
    uploader.start()
    rows, rng, due = [], np.random.default_rng(7), time.perf_counter() + args.every
    while True:
        time.sleep(max(0.0, due - time.perf_counter()))
        due += args.every
        if posted[0] >= len(products) and store.pending_count() == 0:
            break
        pick = products[int(rng.integers(0, max(1, min(posted[0], len(products)))))]
        STAMPS.clear()
        STAMPS["submitted"] = time.perf_counter()
        edits.submit(replace(pick, name=f"{pick.name} v{len(rows)}"), now_utc()).result(timeout=600)
        s = dict(STAMPS, answered=time.perf_counter())
        stage = {"total": s["answered"] - s["submitted"], "writer": s["committed"] - s["submitted"],
                 "encoding": s["encoded"] - s["committed"], "turn_wait": s["turn_got"] - s["turn_asked"],
                 "encode": s["encoded_only"] - s["turn_got"], "save": s["saved"] - s["encoded_only"],
                 "mirror_wait": s["lock_got"] - s["lock_asked"],
                 "put": s["put_done"] - s["lock_got"], "answer": s["answered"] - s["put_done"]}
        rows.append({k: round(v * 1000, 1) for k, v in stage.items()})
        print(f"edit {len(rows)} at {time.perf_counter() - t_start:.0f} s: "
              + " ".join(f"{k} {v:.0f}" for k, v in rows[-1].items()), flush=True)
    uploader.join()
    background.wait_idle(600)
    seconds = time.perf_counter() - t_start
    edits.close()
    background.stop()
    result = {
        "products": args.products, "every_s": args.every, "chunk": args.chunk, "seconds": round(seconds, 1),
        "products_per_s": round(args.products / seconds, 1), "vm_hwm_mib": round(vm_hwm_mib(), 1),
        "indexed": len(index),
        "edit_ms": {k: percentiles([r[k] for r in rows]) for k in (rows[0] if rows else {})},
        "mirror_lock_hold_ms": {k: percentiles(v) for k, v in lock.holds.items()},
        "mirror_lock_wait_ms": {k: percentiles(v) for k, v in lock.waits.items()},
        "syncs": {"count": len(syncs), "rows": sum(s["rows"] for s in syncs),
                  "rows_max": max((s["rows"] for s in syncs), default=0), "each": syncs},
        "edits": rows, "jobs_indexing": sys.modules["jobs.indexing"].__file__,
    }
    result["census_mib"] = census(db, index)
    db.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    shown = {k: v for k, v in result.items() if k != "edits"} | {"syncs": {k: v for k, v in result["syncs"].items()
                                                                          if k != "each"}}
    print(json.dumps(shown, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
