"""`appliance bench save`: how long an index save stops the other threads (the event loop among them).

Per size, an index of synthetic clustered unit vectors (384-d, `[index]` M; `--ef-construction` only changes how
long the build takes, not the file: its layout is fixed by M, dim and the element count), built once and kept in
the work dir. Then, alternating in one window, `--rounds` times each: hnswlib's own `save_index` (what
`VectorIndex.save` called before: the file, then its SHA-256, under the index lock), `VectorIndex.save` writing
the file whole, `VectorIndex.save` appending to the log after 1,000 vectors changed, and one that folds the log
into the file in another process (`storage.hnsw_fold`, as when the log is past its share) after 1,000 more.
Meanwhile a ticker thread sleeps 1 ms in a loop and records its longest gap (a thread that cannot get the GIL
or the index lock cannot tick), and a reader thread asks the index for nearest neighbours and counts its
answers. A window of the same length with no save gives the machine's own longest gap.
"""

from __future__ import annotations

import argparse
import hashlib
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import load_config
from storage import vector_files as vectors_module
from storage.vectors import VectorIndex
from web.bench.common import parse_sizes, size_label, table, work_dir, write_result
from web.bench.synth import centres, members

DIM = 384
BUILD_CHUNK = 50_000
CHANGED = 1_000  # vectors changed before each save that appends to the log


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("save", parents=[common], help="longest pause of other threads during an index save")
    p.add_argument("--vectors", default="100k", help="index sizes, comma-separated (default 100k)")
    p.add_argument("--ef-construction", type=int, default=10, help="for the build only (default 10)")
    p.add_argument("--rounds", type=int, default=2, help="saves of each kind, alternating (default 2)")
    p.add_argument("--seed", type=int, default=3)
    p.set_defaults(run=run)


class Watch:
    """A ticker (longest gap between 1 ms sleeps) and a reader (nearest-neighbour queries answered) while
    `work` runs in this thread."""

    def __init__(self, index: VectorIndex, probe: np.ndarray) -> None:
        self.index, self.probe = index, probe

    def during(self, work: Any) -> dict[str, float]:
        done = threading.Event()
        ticks: list[float] = []
        answered = [0]

        def tick() -> None:
            while not done.is_set():
                ticks.append(time.perf_counter())
                time.sleep(0.001)

        def read() -> None:
            while not done.is_set():
                self.index.query(self.probe[answered[0] % len(self.probe)], 10)
                answered[0] += 1
                time.sleep(0.001)

        threads = [threading.Thread(target=tick), threading.Thread(target=read)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        t0 = time.perf_counter()
        work()
        seconds = time.perf_counter() - t0
        time.sleep(0.05)
        done.set()
        for t in threads:
            t.join()
        gaps = np.diff(np.asarray(ticks)) * 1000
        return {"seconds": round(seconds, 3), "longest_gap_ms": round(float(gaps.max()), 1),
                "gaps_over_50ms": int((gaps > 50).sum()), "queries_answered": answered[0]}


def hnswlib_save(index: VectorIndex, path: Path) -> None:
    """What `VectorIndex.save` did before: hnswlib's `save_index` and the file's SHA-256, under the index lock."""
    with index._lock:
        index._index.save_index(str(path))
        with open(path, "rb") as f:
            hashlib.file_digest(f, "sha256").hexdigest()


def folded(index: VectorIndex) -> None:
    """A save whose log is past its share: the log folded into the file by another process."""
    share, least = vectors_module.LOG_SHARE, vectors_module.LOG_MIN
    vectors_module.LOG_SHARE, vectors_module.LOG_MIN = 0.0, 0
    try:
        index.save()
    finally:
        vectors_module.LOG_SHARE, vectors_module.LOG_MIN = share, least


def built(root: Path, n: int, args: argparse.Namespace) -> VectorIndex:
    config = replace(load_config().index, ef_construction=args.ef_construction)
    index = VectorIndex(root / f"save-{size_label(n)}-ef{args.ef_construction}.hnsw", DIM, config)
    if index.load() is None:
        return index
    rng = np.random.default_rng(args.seed)
    centre_vectors = centres(rng, max(8, n // 100), DIM)
    t0 = time.perf_counter()
    for start in range(0, n, BUILD_CHUNK):
        ids = np.arange(start + 1, min(n, start + BUILD_CHUNK) + 1)
        index.upsert(ids, members(rng, centre_vectors, rng.integers(0, len(centre_vectors), len(ids))), threads=2)
    print(f"  built {size_label(n)} in {time.perf_counter() - t0:.0f} s", flush=True)
    index.save()
    return index


def run(args: argparse.Namespace) -> int:
    root = work_dir(args.work_dir)
    rows, results = [], []
    for n in parse_sizes(args.vectors):
        index = built(root, n, args)
        probe = members(np.random.default_rng(args.seed + 1), centres(np.random.default_rng(1), 8, DIM),
                        np.arange(64) % 8)
        watch = Watch(index, probe)
        size_mib = index.path.stat().st_size / 2**20
        runs: dict[str, list[dict]] = {"none": [], "hnswlib save_index": [], "VectorIndex.save": [],
                                       "VectorIndex.save, log": [], "VectorIndex.save, fold": []}
        rng = np.random.default_rng(args.seed + 2)
        centre_vectors = centres(rng, 8, DIM)
        for _ in range(args.rounds):
            runs["hnswlib save_index"].append(watch.during(
                lambda i=index: hnswlib_save(i, root / "old.hnsw.tmp")))
            runs["VectorIndex.save"].append(watch.during(lambda i=index: i.save(whole=True)))
            changed = rng.choice(n, size=min(CHANGED, n), replace=False) + 1  # then a save of what changed
            index.upsert(changed, members(rng, centre_vectors, rng.integers(0, len(centre_vectors), len(changed))))
            runs["VectorIndex.save, log"].append(watch.during(index.save))
            index.upsert(changed, members(rng, centre_vectors, rng.integers(0, len(centre_vectors), len(changed))))
            runs["VectorIndex.save, fold"].append(watch.during(lambda i=index: folded(i)))
            seconds = runs["VectorIndex.save"][-1]["seconds"]
            runs["none"].append(watch.during(lambda s=seconds: time.sleep(s)))
        (root / "old.hnsw.tmp").unlink(missing_ok=True)
        t0 = time.perf_counter()
        with index._lock:
            index._index.__getstate__()
        copy_ms = round((time.perf_counter() - t0) * 1000, 1)
        for kind, measured in runs.items():
            for m in measured:
                rows.append([size_label(n), f"{size_mib:,.0f}", kind, m["seconds"], m["longest_gap_ms"],
                             m["gaps_over_50ms"], m["queries_answered"]])
        results.append({"vectors": n, "file_mib": round(size_mib, 1), "getstate_ms": copy_ms, "runs": runs})
        print(f"  {size_label(n)}: __getstate__ alone (the GIL-held copy) {copy_ms} ms", flush=True)
    print(table("index saves (ticker: 1 ms sleeps; reader: 10-NN queries)",
                ["vectors", "MiB", "save", "s", "longest gap ms", "gaps > 50 ms", "queries"], rows))
    out = write_result("save", args, {"ef_construction": args.ef_construction, "sizes": results})
    print(f"wrote {out}")
    return 0
