"""Probe (BENCHMARKS.md "Tenth round"): who holds DuckDB's writer lock, how long, and where a `PUT /products`' time
goes, inside a real server: `python -m bench.probes.write_lock OUT.json serve --data-dir D ...` (bench only).

Wraps, in this process only:
- `Database.write` and `Database.checkpoint`: per use, the caller (the storage function that wrote, the thread),
  the wait for the lock and the hold (wall, and the holder's thread CPU);
- the thread pool behind `sync_to_thread` handlers (Litestar's `_run_sync_asyncio`): per handler, the wait for a
  worker thread and the run;
- an edit's stages, on the threads running `put_product`: the id map, the store's transaction, the embedding and
  index sync of a new text line, the view patch, the read-back.
SIGUSR1 starts a window; SIGUSR2 ends it and writes OUT-<n>.json: those figures, the census of tracked objects of a
few classes (`Ranking`, `ServingPrior`, ...) and the sizes of the recommender's caches (snapshots, page cache).
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_local = threading.local()
lock_uses: list[tuple[str, float, float, float]] = []  # (label, wait ms, hold ms, hold CPU ms)
pool_uses: list[tuple[str, float, float]] = []  # (handler, wait ms, run ms)
edit_stages: list[tuple[str, float, float]] = []  # (stage, wall ms, CPU ms)
services_seen: list[Any] = []
CENSUS = ("Ranking", "ServingPrior", "CatalogView", "Sources", "Catalogued", "FeedPage", "Product")


def _caller() -> str:
    """The innermost frame outside storage/db.py and contextlib: module.function."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.endswith(("storage/db.py", "contextlib.py"))
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{Path(frame.f_code.co_filename).stem}.{frame.f_code.co_qualname}"


def _thread() -> str:
    name = threading.current_thread().name
    return "pool" if name.startswith(("ThreadPoolExecutor", "AnyIO")) else name


def wrap_lock() -> None:
    from storage.db import Database

    write, checkpoint = Database.write, Database.checkpoint

    @contextmanager
    def timed_write(self):  # type: ignore[no-untyped-def]
        label = f"{_caller()} [{_thread()}]"
        t0 = time.perf_counter()
        with self._write_lock:
            t1, c1 = time.perf_counter(), time.thread_time()
            try:
                with write(self) as cur:
                    yield cur
            finally:
                t2, c2 = time.perf_counter(), time.thread_time()
                with _lock:
                    lock_uses.append((label, 1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (c2 - c1)))

    def timed_checkpoint(self):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        with self._write_lock:
            t1, c1 = time.perf_counter(), time.thread_time()
            try:
                return checkpoint(self)
            finally:
                with _lock:
                    lock_uses.append((f"checkpoint [{_thread()}]", 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1),
                                      1e3 * (time.thread_time() - c1)))

    Database.write = timed_write  # type: ignore[method-assign]
    Database.checkpoint = timed_checkpoint  # type: ignore[method-assign]


def wrap_pool() -> None:
    import litestar.concurrency as concurrency

    run = concurrency._run_sync_asyncio

    async def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = getattr(fn, "__qualname__", repr(fn))
        t0 = time.perf_counter()

        def inside(*a, **kw):  # type: ignore[no-untyped-def]
            t1 = time.perf_counter()
            _local.edit = name.endswith("put_product")
            try:
                return fn(*a, **kw)
            finally:
                _local.edit = False
                with _lock:
                    pool_uses.append((name, 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1)))

        return await run(inside, *args, **kwargs)

    concurrency._run_sync_asyncio = timed


def _stage(owner: Any, attr: str, label: str) -> None:
    fn = getattr(owner, attr)

    def timed(*a, **kw):  # type: ignore[no-untyped-def]
        if not (getattr(_local, "edit", False) or threading.current_thread().name == "catalog-writer"):
            return fn(*a, **kw)
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            with _lock:
                edit_stages.append((label, 1e3 * (time.perf_counter() - t0), 1e3 * (time.thread_time() - c0)))

    setattr(owner, attr, timed)


def wrap_edit() -> None:
    import web.controllers.products as products
    import web.services as services_module
    from appliance.recommender import Recommender
    from jobs.catalog import CatalogService
    from jobs.indexing import CatalogIndexer
    from storage.catalog import CatalogStore

    _stage(products, "created", "id map")
    _stage(products, "stored_out", "read-back")
    _stage(CatalogService, "upsert", "upsert (all)")
    _stage(CatalogStore, "upsert", "store transaction (wait + hold)")
    _stage(CatalogStore, "cached_vectors", "cached vectors")
    if hasattr(CatalogStore, "stored"):  # the branch's group read-back
        _stage(CatalogStore, "stored", "read-back (group)")
    _stage(CatalogIndexer, "embed_lines", "embed new line")
    _stage(CatalogIndexer, "sync_products", "index sync")
    _stage(Recommender, "apply_changes", "view patch")
    build = services_module.build_services

    def keep(*a, **kw):  # type: ignore[no-untyped-def]
        services_seen.append(build(*a, **kw))
        return services_seen[-1]

    services_module.build_services = keep
    import web.app as app

    app.build_services = keep  # imported by name there


def _summary(rows: list[tuple], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    groups: dict[str, list[tuple]] = collections.defaultdict(list)
    for row in rows:
        groups[row[0]].append(row[1:])
    out = []
    for label, values in groups.items():
        entry: dict[str, Any] = {"label": label, "count": len(values)}
        for i, col in enumerate(columns):
            xs = sorted(v[i] for v in values)
            entry[col] = {"sum": round(sum(xs), 1), "p50": round(xs[len(xs) // 2], 2),
                          "p99": round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 2), "max": round(xs[-1], 2)}
        out.append(entry)
    return sorted(out, key=lambda e: -e[columns[1 if len(columns) > 1 else 0]]["sum"])


def census() -> dict[str, Any]:
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in CENSUS:
            counts[name] += 1
    out: dict[str, Any] = {"tracked": dict(counts)}
    if services_seen:
        s = services_seen[-1]
        out["snapshots"] = len(s.recommender._snapshots)
        out["catalogues_in_snapshots"] = len({id(v.catalogue) for v in list(s.recommender._snapshots.values())})
        out["priors_in_snapshots"] = len({id(v.catalogue.prior) for v in list(s.recommender._snapshots.values())})
        out["page_cache"] = len(s.feeds.pages._pages) if hasattr(s.feeds, "pages") else None
        out["view_version"] = s.recommender.live._view.version if s.recommender.live._view is not None else None
        if hasattr(s, "edits"):
            out["edit_groups"], out["edits_grouped"] = s.edits.commits, s.edits.edits
    return out


def main(argv: list[str]) -> int:
    out, rest = Path(argv[0]), argv[1:]
    wrap_lock()
    wrap_pool()
    wrap_edit()
    state = {"n": 0, "t0": time.monotonic()}

    def start(*_: object) -> None:
        with _lock:
            lock_uses.clear()
            pool_uses.clear()
            edit_stages.clear()
        state["t0"] = time.monotonic()

    def end(*_: object) -> None:
        state["n"] += 1
        with _lock:
            locks, pools, stages = list(lock_uses), list(pool_uses), list(edit_stages)
        seconds = time.monotonic() - state["t0"]
        summary = {"seconds": round(seconds, 1),
                   "lock_held_share": round(sum(r[2] for r in locks) / 1e3 / max(seconds, 1e-9), 3),
                   "lock": _summary(locks, ("wait_ms", "hold_ms", "hold_cpu_ms")),
                   "pool": _summary(pools, ("wait_ms", "run_ms")),
                   "edit_stages": _summary(stages, ("wall_ms", "cpu_ms")), "census": census()}
        path = out.with_name(f"{out.stem}-{state['n']}.json")
        path.with_suffix(".tmp").write_text(json.dumps(summary, indent=1))
        os.replace(path.with_suffix(".tmp"), path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, lambda *_: threading.Thread(target=end, daemon=True).start())
    from web.cli import main as cli

    return cli(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
