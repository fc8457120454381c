"""Probe (BENCHMARKS.md "Feed under load", sixteenth round): the consumer's queue cycle (receive 100, then delete
them) against the backlog it receives from, on a real DuckDB file: whether a consumer that falls behind gets
slower per message. Messages as the event stream sends them: one group per shopper (10k shoppers), a JSON body.
Prints wall and process CPU ms per cycle (DuckDB's own threads count in the process CPU).
Run: PYTHONPATH=. .venv/bin/python bench/probes/queue_backlog.py OUT.json"""
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from appliance.types import now_utc
from storage.db import Database
from storage.queue_store import QueueStore

CYCLES, BATCH = 20, 100
rng = np.random.default_rng(1)
result = {"code": sys.modules["storage"].__file__, "batch": BATCH, "backlogs": {}}
for backlog in (200, 2_000, 10_000, 30_000):
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "q.duckdb")
        store = QueueStore(db)
        now = now_utc()
        body = json.dumps({"customer_id": 1, "product_id": 2, "kind": "product_viewed", "at": now.isoformat()})
        for start in range(0, backlog + CYCLES * BATCH, 5_000):
            n = min(5_000, backlog + CYCLES * BATCH - start)
            with db.write() as cur:
                store.insert(cur, [body] * n, [str(g) for g in rng.integers(1, 10_001, n)], [None] * n, now,
                             now - timedelta(minutes=5))
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(CYCLES):
            rows, _, _ = store.receive(now, BATCH, now + timedelta(seconds=30), 5)
            store.delete([r[1] for r in rows])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        db.close()
    result["backlogs"][backlog] = {"wall_ms_per_cycle": round(1e3 * wall / CYCLES, 2),
                                   "cpu_ms_per_cycle": round(1e3 * cpu / CYCLES, 2)}
    print(backlog, result["backlogs"][backlog], flush=True)
Path(sys.argv[1]).write_text(json.dumps(result, indent=1))
