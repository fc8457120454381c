"""`appliance bench ann`: hnswlib recall@10 / recall@100 against exact brute force, over a sweep of ef.

Synthetic clustered unit vectors (384-d, one cluster per ~100 vectors, a member's cosine to its centre ~0.8);
queries are user-like points of the same clusters (cosine to their centre ~0.7), not in the index. The index is
the appliance's own `storage.vectors.VectorIndex` with the shipped `[index]` config (space, M, ef_construction),
filled the way the appliance fills it (one `upsert`, one hnswlib thread), queried through `VectorIndex.query`
(which raises ef to k when k is larger). Brute force is numpy: one matrix-vector product per query, or one
matrix product for the whole batch, then argpartition.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import load_config
from storage.hnsw_file import check_structure
from storage.vectors import VectorIndex
from web.bench.common import parse_size, percentiles, size_label, table, write_result
from web.bench.synth import centres, members

TARGET_RECALL = 0.98


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ann", parents=[common], help="hnswlib recall@10/@100 vs exact search, over a sweep of ef")
    p.add_argument("--vectors", default="100k", help="vectors in the index (default 100k)")
    p.add_argument("--queries", type=int, default=500, help="queries (default 500)")
    p.add_argument("--ef", default="10,16,32,64,100,128,160,200,256,400,512,800", help="ef values to sweep")
    p.add_argument("--seed", type=int, default=3)
    p.set_defaults(run=run)


def exact_top(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids (row numbers) of the k most cosine-similar rows per query, best first (rows are unit vectors)."""
    sims = queries @ data.T
    k = min(k, data.shape[0])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _check_ms(path: Path, dim: int, normalised: bool) -> float:
    """Milliseconds of the check every start runs before hnswlib reads the file (best of 3, file cached)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        check_structure(path, dim, normalised)
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def _sweep(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, ef: int, k: int) -> dict[str, Any]:
    index.config = replace(index.config, ef_search=ef)
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids, _ = index.query(q, k)
        times.append((time.perf_counter() - t0) * 1000)
        found.append(ids - 1)  # labels are row + 1 (ids start at 1, as in the appliance)
    return {"ef": ef, "effective_ef": max(ef, k), "k": k, f"recall@{k}": round(recall(found, truth, k), 4),
            "latency_ms": percentiles(times)}


def _brute(data: np.ndarray, queries: np.ndarray, k: int) -> dict[str, Any]:
    times = []
    for q in queries[: min(len(queries), 200)]:
        t0 = time.perf_counter()
        sims = data @ q
        part = np.argpartition(-sims, k - 1)[:k]
        part[np.argsort(-sims[part])]
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    exact_top(data, queries, k)
    batched = (time.perf_counter() - t0) * 1000
    return {"k": k, "per_query_ms": percentiles(times), "batched_total_ms": round(batched, 2),
            "batched_per_query_ms": round(batched / len(queries), 4)}


def run(args: argparse.Namespace) -> int:
    config = load_config()
    n, dim = parse_size(args.vectors), config.encoder.dim
    rng = np.random.default_rng(args.seed)
    centre_vectors = centres(rng, max(8, n // 100), dim)
    data = members(rng, centre_vectors, rng.integers(0, len(centre_vectors), n))
    queries = members(rng, centre_vectors, rng.integers(0, len(centre_vectors), args.queries), noise=1.0)
    depth = config.feed.personal_depth
    print(f"ann: {size_label(n)} x {dim}-d, {len(queries)} queries; index config {config.index}", flush=True)
    t0 = time.perf_counter()
    truth = exact_top(data, queries, max(100, depth))
    truth_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="appliance-ann-") as tmp:
        index = VectorIndex(Path(tmp) / "ann.hnsw", dim, config.index)
        t0 = time.perf_counter()
        index.upsert(np.arange(1, n + 1, dtype=np.int64), data)
        build_s = time.perf_counter() - t0
        print(f"  built in {build_s:.1f} s ({n / build_s:,.0f} vectors/s, 1 thread as in the appliance)", flush=True)
        sweeps = []
        for ef in sorted({int(e) for e in args.ef.split(",") if e.strip()}):
            for k in (10, 100):
                if k > n:
                    continue
                sweeps.append(_sweep(index, queries, truth, ef, k))
        shipped = config.index.ef_search
        feed_query = _sweep(index, queries, truth, shipped, min(depth, n)) if depth <= n else None
        index.config = replace(index.config, ef_search=shipped)
        index.save()
        check_ms = _check_ms(index.path, dim, config.index.space == "cosine")
        print(f"  start-up structural check of the saved file: {check_ms:.1f} ms (best of 3)", flush=True)
    brute = [_brute(data, queries, k) for k in (10, 100) if k <= n]

    def smallest(k: int) -> dict[str, Any] | None:
        good = [s for s in sweeps if s["k"] == k and s[f"recall@{k}"] >= TARGET_RECALL]
        return min(good, key=lambda s: s["ef"]) if good else None

    best10, best100 = smallest(10), smallest(100)
    rows = [(s["ef"], s["effective_ef"], s["k"], s[f"recall@{s['k']}"], s["latency_ms"]["p50"], s["latency_ms"]["p99"])
            for s in sweeps]
    print()
    print(table(f"hnswlib via VectorIndex (M={config.index.m}, ef_construction={config.index.ef_construction}); ms",
                ("ef", "eff. ef", "k", "recall", "p50", "p99"), rows))
    print()
    print(table("exact numpy brute force (ms)", ("k", "per query p50", "per query p99", "batched per query"),
                [(b["k"], b["per_query_ms"]["p50"], b["per_query_ms"]["p99"], b["batched_per_query_ms"])
                 for b in brute]))
    lines = []
    for k, best in ((10, best10), (100, best100)):
        if best:
            bf = next(b for b in brute if b["k"] == k)
            lines.append(f"  smallest ef with recall@{k} >= {TARGET_RECALL}: ef={best['ef']} (effective "
                         f"{best['effective_ef']}), recall {best[f'recall@{k}']}, "
                         f"p50 {best['latency_ms']['p50']:.3f} ms"
                         f" vs brute force {bf['per_query_ms']['p50']:.3f} ms per query")
        else:
            lines.append(f"  TARGET MISSED no ef in the sweep reaches recall@{k} >= {TARGET_RECALL}")
    if feed_query:
        lines.append(f"  the feed's own query (k=personal_depth={depth}, ef={feed_query['effective_ef']}): "
                     f"recall@{depth} {feed_query[f'recall@{depth}']}, p50 {feed_query['latency_ms']['p50']:.3f} ms")
    print("\n".join(lines))
    out = write_result("ann", args, {
        "vectors": n, "dim": dim, "queries": len(queries), "index": config.index.__dict__,
        "data": "synthetic clustered unit vectors", "build_seconds": round(build_s, 2),
        "exact_ground_truth_seconds": round(truth_s, 2), "sweep": sweeps, "brute_force": brute,
        "smallest_ef_recall10": best10, "smallest_ef_recall100": best100, "feed_query": feed_query,
        "target_recall": TARGET_RECALL, "summary": lines, "structure_check_ms": round(check_ms, 2),
    })
    print(f"wrote {out}")
    return 0
