"""`appliance bench compact`: how long the reindex job's compaction stops the other threads and the index's queries.

Per size, a DuckDB file of synthetic clustered unit vectors (the user vectors table: the same `vector_pages` /
`vector_ids` as products, without the catalog's text columns) mirrored into an hnswlib index (`IndexMirror`,
`[index]` M, built at `--ef-construction`), kept in the work dir. Then, alternating in one window, `--rounds`
times each, after `--deleted` vectors have left DuckDB and the index: the compaction as it was (`reset`, `sync`,
a whole `save`: the rebuild under the index lock) and `IndexMirror.compact` (rebuilt aside, swapped in, saved
whole), and a window as long as the last compaction with none. Meanwhile `bench save`'s watch runs: a thread
sleeping 1 ms records its longest gap, another asks 10-NN queries and counts its answers.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import load_config
from appliance.types import now_utc
from jobs.indexing import IndexMirror
from storage.db import Database
from storage.users import UserStore
from storage.vectors import VectorIndex
from web.bench.common import parse_sizes, size_label, table, work_dir, write_result
from web.bench.save import BUILD_CHUNK, DIM, Watch
from web.bench.synth import centres, members


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("compact", parents=[common], help="longest pause of other threads during an index compaction")
    p.add_argument("--vectors", default="100k", help="index sizes, comma-separated (default 100k)")
    p.add_argument("--deleted", type=float, default=0.11, help="share removed before each compaction (default 0.11)")
    p.add_argument("--ef-construction", type=int, default=10, help="for the builds only (default 10)")
    p.add_argument("--rounds", type=int, default=2, help="compactions of each kind, alternating (default 2)")
    p.add_argument("--seed", type=int, default=3)
    p.set_defaults(run=run)


def in_place(mirror: IndexMirror) -> None:
    """The compaction before `IndexMirror.compact`: the index emptied, filled from DuckDB, written whole, in place."""
    mirror.index.reset()
    mirror.sync()
    mirror.index.save()


def built(root: Path, n: int, args: argparse.Namespace) -> tuple[Database, UserStore, IndexMirror]:
    config = replace(load_config().index, ef_construction=args.ef_construction)
    folder = root / f"compact-{size_label(n)}-ef{args.ef_construction}"
    db = Database(folder / "appliance.duckdb")
    users = UserStore(db)
    mirror = IndexMirror(VectorIndex(folder / "users.hnsw", DIM, config), users.vector_pages, users.vector_ids, 2)
    if users.count() < n:
        rng = np.random.default_rng(args.seed)
        centre_vectors = centres(rng, max(8, n // 100), DIM)
        for start in range(users.count(), n, BUILD_CHUNK):
            ids = list(range(start + 1, min(n, start + BUILD_CHUNK) + 1))
            vectors = members(rng, centre_vectors, rng.integers(0, len(centre_vectors), len(ids)))
            users.save(ids, vectors, "bench", [now_utc()] * len(ids), now_utc())
    t0 = time.perf_counter()
    print(f"  {size_label(n)}: index {mirror.reconcile()} in {time.perf_counter() - t0:.0f} s", flush=True)
    return db, users, mirror


def _delete(db: Database, users: UserStore, mirror: IndexMirror, share: float, rng: np.random.Generator) -> None:
    """Remove a share of the stored vectors from DuckDB, then from the index (as the prune job does)."""
    held = users.vector_ids()
    gone = rng.choice(held, size=int(share * len(held)), replace=False).tolist()
    with db.write() as cur:
        cur.execute("DELETE FROM user_vectors WHERE customer_id IN (SELECT unnest($1::BIGINT[]))", [gone])
    mirror.remove(gone)


def run(args: argparse.Namespace) -> int:
    root = work_dir(args.work_dir)
    rows, results = [], []
    for n in parse_sizes(args.vectors):
        db, users, mirror = built(root, n, args)
        probe = members(np.random.default_rng(args.seed + 1), centres(np.random.default_rng(1), 8, DIM),
                        np.arange(64) % 8)
        watch = Watch(mirror.index, probe)
        runs: dict[str, list[dict]] = {"none": [], "in place (before)": [], "aside (IndexMirror.compact)": []}
        rng = np.random.default_rng(args.seed + 2)
        for _ in range(args.rounds):
            for kind, work in (("in place (before)", in_place), ("aside (IndexMirror.compact)", IndexMirror.compact)):
                _delete(db, users, mirror, args.deleted, rng)
                measured = watch.during(lambda w=work, m=mirror: w(m))
                assert mirror.index.deleted == 0 and len(mirror.index) == users.count()
                runs[kind].append({**measured, "vectors": len(mirror.index)})
            seconds = runs["aside (IndexMirror.compact)"][-1]["seconds"]
            runs["none"].append(watch.during(lambda s=seconds: time.sleep(s)))
        db.close()
        for kind, measured in runs.items():
            for m in measured:
                rows.append([size_label(n), kind, m.get("vectors", ""), m["seconds"], m["longest_gap_ms"],
                             m["gaps_over_50ms"], m["queries_answered"]])
        results.append({"vectors": n, "runs": runs})
    print(table("index compactions (ticker: 1 ms sleeps; reader: 10-NN queries)",
                ["vectors", "compaction", "left", "s", "longest gap ms", "gaps > 50 ms", "queries"], rows))
    out = write_result("compact", args, {"ef_construction": args.ef_construction, "deleted": args.deleted,
                                         "sizes": results})
    print(f"wrote {out}")
    return 0
