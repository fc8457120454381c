"""Probe (BENCHMARKS.md "Feed under load", seventeenth round): the CPU of a consumer batch's reads, in process.

On a copy of a built `bench serve` shop's DuckDB file: batches of BATCH random shoppers of the shop, and for each
the reads the consumer makes before computing their vectors (their newest event ids and their last 20 events):
`EventStore.recent` where the code has it (one read), else `newest_ids` then `histories` (two). Thread CPU per
batch (DuckDB's `threads` is set to 1 for the probe, so each read runs on this thread). A/B: run it with each
arm's `.venv` from that arm's checkout (the probe file is the same).
Run: .venv/bin/python bench/probes/history_reads.py SHOP_DIR ROUNDS BATCH OUT.json"""
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from storage.db import Database
from storage.events import EventStore

src, rounds, batch, out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "appliance.duckdb"
    shutil.copy(src / "appliance.duckdb", path)
    db = Database(path)
    db.read("SET threads = 1")
    total = db.read("SELECT count(*) FROM events")[0][0]
    events = EventStore(db)
    customers = [r[0] for r in db.read("SELECT DISTINCT customer_id FROM events ORDER BY 1")]
    one_read = hasattr(events, "recent")

    def reads(ids: list[int]) -> int:
        if one_read:
            _, found = events.recent(ids, None, 20)
        else:
            events.newest_ids(ids)
            found = events.histories(ids, None, 20)
        return sum(len(h) for h in found.values())

    rng = random.Random(7)
    for _ in range(5):  # warm-up
        reads(rng.sample(customers, batch))
    cpu, rows = [], 0
    for _ in range(rounds):
        ids = sorted(rng.sample(customers, batch))
        t0 = time.thread_time()
        rows += reads(ids)
        cpu.append(1000 * (time.thread_time() - t0))
    db.close()
result = {
    "code": "one read (recent)" if one_read else "two reads (newest_ids, histories)", "batch": batch,
    "rounds": rounds, "events_in_shop": total, "history_rows_per_batch": rows / rounds,
    "cpu_ms_per_batch": {"median": round(statistics.median(cpu), 2), "p10": round(sorted(cpu)[rounds // 10], 2),
                         "p90": round(sorted(cpu)[rounds * 9 // 10], 2)},
}
print(json.dumps(result, indent=1))
out.write_text(json.dumps(result, indent=1))
