"""`appliance bench import`: rows/s of the store step of `appliance import events`, first and again.

Two histories: the demo shop's (config `[demo]`, ~20k events) and a synthetic one of `--events` rows (Zipf-like
products, the bench shops' event mix). Each goes into a fresh DuckDB file three ways: `EventStore.append` (the
live path, what an import used before it skipped duplicates), then `EventStore.append_new` into another file
twice: the first import, and the same file again (a nightly export re-run: every row a duplicate, none stored);
then the same rows each with an `event_id` into a third file, twice (deduplicated by id instead of content).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from appliance.config import load_config
from appliance.demo import generate_demo
from appliance.types import Event, now_utc
from storage.db import Database
from storage.events import EventStore
from web.bench.common import parse_size, size_label, table, write_result
from web.bench.synth import Shop, event_batches


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import", parents=[common], help="rows/s of importing events, first and again (duplicates)")
    p.add_argument("--events", default="200k", help="rows of the synthetic history (default 200k)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(run=run)


def _timed(work: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    stored = work()
    return time.perf_counter() - started, stored


def _measure(events: Sequence[Event], folder: Path) -> dict[str, Any]:
    now, dated = now_utc(), [True] * len(events)
    keyed = [msgspec.structs.replace(e, key=f"evt-{i:09d}") for i, e in enumerate(events)]
    out: dict[str, Any] = {"rows": len(events)}
    stores = [Database(folder / f"{name}.duckdb") for name in ("live", "dedup", "keyed")]
    try:
        plain, skipping, by_id = (EventStore(db) for db in stores)
        for name, work in (("append", lambda: len(plain.append(events, now))),
                           ("append_new first", lambda: len(skipping.append_new(events, now, dated).event_ids)),
                           ("append_new again", lambda: len(skipping.append_new(events, now, dated).event_ids)),
                           ("event_id first", lambda: len(by_id.append_new(keyed, now, dated).event_ids)),
                           ("event_id again", lambda: len(by_id.append_new(keyed, now, dated).event_ids))):
            seconds, stored = _timed(work)
            out[name] = {"seconds": round(seconds, 3), "rows_per_s": round(len(events) / seconds), "stored": stored}
    finally:
        for db in stores:
            db.close()
    return out


def run(args: argparse.Namespace) -> int:
    config = load_config(overrides={"server": {"load_demo": False}})
    demo, now = config.demo, now_utc()
    n = parse_size(args.events)
    histories = {
        "demo": generate_demo(demo.seed, demo.products, demo.customers, demo.days, now).events,
        f"synthetic {size_label(n)}": [e for batch in event_batches(
            np.random.default_rng(args.seed), Shop(5_000, 20_000, n, args.seed), now) for e in batch],
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="appliance-import-") as tmp:
        for i, (name, events) in enumerate(histories.items()):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            results[name] = _measure(events, folder)
    steps = ("append", "append_new first", "append_new again", "event_id first", "event_id again")
    rows = [(name, r["rows"], *(r[k]["rows_per_s"] for k in steps), r["append_new again"]["stored"],
             r["event_id again"]["stored"]) for name, r in results.items()]
    print(table("event import, store step (rows/s)", ("history", "rows", "append (live path)", "import, first",
                                                     "import, again", "with ids, first", "with ids, again",
                                                     "stored again", "stored again (ids)"), rows))
    out = write_result("import", args, {"histories": results})
    print(f"wrote {out}")
    return 0
