"""Probe (BENCHMARKS.md "Feed under load", thirteenth round): how often a writer's DuckDB transaction gives up the GIL
and waits to take it back, by transaction shape, and what that costs its hold of the writer lock.

A thread spinning in pure Python keeps the GIL until the switch interval (`sys.getswitchinterval()`, 5 ms) forces it
to let go, so each time the writer gives the GIL up (a DuckDB call releases it; so does every unfinished task of a
query, to check for signals) it waits about one interval to get it back. Each shape runs ROUNDS times alone, then
ROUNDS times beside SPINNERS spinning threads, on a fresh database with the appliance's schema:
waits = (hold with the spinners - hold alone) / interval, both medians. Every transaction goes through
`Database.write` (wrapped by `write_lock.wrap_lock`: the hold's wall time and the holder's thread CPU).
The group commit and the consumer's save go through their own code (`GroupCommit`, `UserStore.save`), so the probe
run from an export of another commit (`PYTHONPATH`) measures that commit's transactions.
Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/probes/gil_waits.py OUT.json [ROUNDS] [SPINNERS]"""
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from appliance.types import Event, now_utc
from bench.probes import write_lock
from jobs.ingest import GroupCommit
from jobs.queue import DurableQueue, event_body
from storage.db import Database
from storage.events import EventStore
from storage.users import UserStore

out = Path(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
spinners = int(sys.argv[3]) if len(sys.argv) > 3 else 1
write_lock.wrap_lock()
root = Path(tempfile.mkdtemp(prefix="gil-waits-"))
db = Database(root / "appliance.duckdb")
events = EventStore(db)
queue = DurableQueue(db, visibility_timeout=30, max_receive_count=5)
users = UserStore(db)
ingest = GroupCommit(db, events, queue)
rng = np.random.default_rng(3)
names = ("product_viewed", "product_clicked", "product_added_to_cart")


def empty() -> None:
    with db.write():
        pass


def one_select() -> None:
    with db.write() as cur:
        cur.execute("SELECT 1").fetchall()


def two_selects() -> None:
    with db.write() as cur:
        cur.execute("SELECT 1").fetchall()
        cur.execute("SELECT 2").fetchall()


def select_no_fetch() -> None:
    with db.write() as cur:
        cur.execute("SELECT 1")


def select_fetchone() -> None:
    with db.write() as cur:
        cur.execute("SELECT 1").fetchone()


def three_inserts_three_calls() -> None:
    with db.write() as cur:
        for _ in range(3):
            cur.execute("INSERT INTO t SELECT unnest($1::BIGINT[])", [[1, 2, 3, 4, 5]])


def three_inserts_one_call() -> None:
    with db.write() as cur:
        cur.execute("INSERT INTO t SELECT unnest([1, 2, 3, 4, 5]); INSERT INTO t SELECT unnest([1, 2, 3, 4, 5]);"
                    "INSERT INTO t SELECT unnest($1::BIGINT[])", [[1, 2, 3, 4, 5]])


def one_call_two_statements() -> None:
    with db.write() as cur:
        cur.execute("SELECT 1; SELECT 2").fetchall()


def insert_returning() -> None:
    with db.write() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS t (i BIGINT)")
        cur.execute("INSERT INTO t SELECT unnest($1::BIGINT[]) RETURNING i", [[1, 2, 3, 4, 5]]).fetchall()


def group_commit(n: int) -> None:
    now = now_utc()
    batch = [Event(int(c), int(p), names[int(k)], now) for c, p, k in
             zip(rng.integers(1, 1000, n), rng.integers(1, 5000, n), rng.integers(0, 3, n), strict=True)]
    ingest.append(batch, [event_body(e, str(e.customer_id), str(e.product_id)) for e in batch], now)


def consumer_save() -> None:
    """The consumer's save: 5 shoppers' vectors (checked against their newest event) and the delete of their
    messages, one transaction."""
    got = queue.receive(max_messages=5, wait_seconds=0)
    if not got:
        group_commit(5)
        got = queue.receive(max_messages=5, wait_seconds=0)
    customers = sorted({int(m.body["customer_id"]) for m in got})
    basis = events.recent(customers, None, 1)[0]
    vectors = rng.standard_normal((len(customers), 384)).astype(np.float32)
    now = now_utc()
    users.save(customers, vectors, "mean", [now] * len(customers), now, basis,
               also=lambda cur: queue.delete_batch_in(cur, [m.receipt_handle for m in got]))


def receive() -> None:
    group_commit(5)
    queue.receive(max_messages=5, wait_seconds=0)


SHAPES = {  # name: (the shape, the writer whose holds are counted: a part of write_lock's label)
    "empty transaction (begin, commit)": (empty, "empty"),
    "one SELECT 1 + fetchall": (one_select, "one_select"),
    "two SELECTs, two calls": (two_selects, "two_selects"),
    "two SELECTs, one call": (one_call_two_statements, "one_call_two"),
    "INSERT ... RETURNING + fetchall (and a CREATE IF NOT EXISTS)": (insert_returning, "insert_returning"),
    "SELECT 1, no fetch": (select_no_fetch, "select_no_fetch"),
    "SELECT 1 + fetchone": (select_fetchone, "select_fetchone"),
    "three INSERTs, three calls": (three_inserts_three_calls, "three_inserts_three"),
    "three INSERTs, one call": (three_inserts_one_call, "three_inserts_one"),
    "group commit, 5 events (GroupCommit.append)": (lambda: group_commit(5), "event-writer"),
    "group commit, 50 events": (lambda: group_commit(50), "event-writer"),
    "queue receive, 5 messages": (receive, "QueueStore.receive"),
    "consumer save + delete, 5 shoppers": (consumer_save, "UserStore.save"),
}


def spin(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def measure(fn, label: str) -> tuple[list[float], list[float]]:  # noqa: ANN001
    """Holds (ms) and their CPU (ms) of the transactions of the writer `label` while `fn` runs `rounds` times (after
    2 warm-up calls)."""
    for _ in range(2):
        fn()
    with write_lock._lock:
        write_lock.lock_uses.clear()
    for _ in range(rounds):
        fn()
    time.sleep(0.05)  # the group commit's writer thread records its hold as its block ends
    with write_lock._lock:
        uses = list(write_lock.lock_uses)
    return [u[2] for u in uses if label in u[0]], [u[3] for u in uses if label in u[0]]


interval_ms = 1e3 * sys.getswitchinterval()
result = {"code": sys.modules["jobs"].__file__, "rounds": rounds, "spinners": spinners, "interval_ms": interval_ms,
          "shapes": {}}
for name, (fn, label) in SHAPES.items():
    alone, alone_cpu = measure(fn, label)
    stop = threading.Event()
    threads = [threading.Thread(target=spin, args=(stop,), daemon=True) for _ in range(spinners)]
    for t in threads:
        t.start()
    try:
        busy, busy_cpu = measure(fn, label)
    finally:
        stop.set()
        for t in threads:
            t.join()
    row = {"holds": len(busy), "hold_ms_alone_p50": round(statistics.median(alone), 3),
           "hold_cpu_ms_alone_p50": round(statistics.median(alone_cpu), 3),
           "hold_ms_spinning_p50": round(statistics.median(busy), 3),
           "hold_ms_spinning_p90": round(sorted(busy)[int(0.9 * (len(busy) - 1))], 3),
           "hold_cpu_ms_spinning_p50": round(statistics.median(busy_cpu), 3)}
    row["gil_waits"] = round((row["hold_ms_spinning_p50"] - row["hold_ms_alone_p50"]) / interval_ms, 2)
    result["shapes"][name] = row
    print(f"{name:65s} alone {row['hold_ms_alone_p50']:7.2f} ms (cpu {row['hold_cpu_ms_alone_p50']:6.2f})"
          f"  spinning {row['hold_ms_spinning_p50']:7.2f} ms  waits {row['gil_waits']:5.1f}", flush=True)
ingest.close()
db.close()
out.write_text(json.dumps(result, indent=1))
