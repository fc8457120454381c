"""Probe (BENCHMARKS.md "Feed under load", twelfth round): the event consumer's batch under the write streams, in
process, on a copy of `bench serve`'s built shop. Two threads stream writes as a server under `bench serve` gets them
(events through the group commit at EPS events/s in requests of 5, product edits through the catalog writer at 10/s:
a cent on the price, stock flipped), while this thread runs the consumer's batches (`run_once`) for SECONDS. Prints
and writes, per processed event, the consumer thread's CPU by stage and its holds of DuckDB's writer lock (count,
wait, hold wall and CPU, by the storage function that wrote), and every thread's holds beside it.
A/B: run it with `PYTHONPATH` on an export of the other commit (`git archive`); the probe file is the same.
No feed is asked meanwhile (the feeds are not warmed): the consumer prepares no shopper's feed.
Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/probes/consumer_batch.py SHOP_DIR SECONDS EPS OUT.json"""
import dataclasses
import json
import shutil
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from appliance.config import load_config
from appliance.types import Event, now_utc
from bench.probes import write_lock
from jobs.queue import event_body
from web.services import build_services
from web.startup import load_indexes, load_serving_model

src, seconds, eps, out = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
path = src.with_name(src.name + ".consumer")
shutil.rmtree(path, ignore_errors=True)
shutil.copytree(src, path)
write_lock.wrap_lock()  # every Database.write: caller, thread, wait, hold (wall and the holder's CPU)
config = load_config(overrides={"server": {"data_dir": str(path), "load_demo": False}})
services = build_services(config)
load_indexes(services)
load_serving_model(services)
print("serving", services.serving.get().version, "code", sys.modules["jobs"].__file__, flush=True)
names = ("product_viewed", "product_viewed", "product_clicked", "product_added_to_cart")
stop = threading.Event()
stages: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # stage -> [calls, consumer thread CPU s]
consumer_thread = threading.current_thread()


def timed(owner, attr, label):  # noqa: ANN001, ANN201
    fn = getattr(owner, attr)

    def wrapper(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        if threading.current_thread() is not consumer_thread:
            return fn(*a, **kw)
        c0 = time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            stages[label][0] += 1
            stages[label][1] += time.thread_time() - c0

    setattr(owner, attr, wrapper)


for owner, attr, label in ((services.queue, "receive", "receive"),
                           (services.events, "recent", "histories and newest ids"),
                           (services.updater.products, "lookup", "product vectors"),
                           (services.updater, "_vectors", "user tower"), (services.users, "save", "vector save"),
                           (services.queue, "delete_batch", "message delete (own transaction)"),
                           (services.updater, "retry_waiting", "retry waiting"),
                           (services.updater.user_mirror, "sync", "user index sync")):
    timed(owner, attr, label)


def events_stream(rng: np.random.Generator) -> None:
    ids = services.ids
    due = time.monotonic()
    while not stop.is_set():
        due += 5 / eps
        time.sleep(max(0.0, due - time.monotonic()))
        now = now_utc()
        c, p, k = rng.integers(1, 10_001, 5), rng.integers(1, 100_001, 5), rng.integers(0, 4, 5)
        req = [(str(int(a)), str(int(b)), names[int(x)]) for a, b, x in zip(c, p, k, strict=True)]
        cks = ids.customers.keys([r[0] for r in req], create=True)
        pks = ids.products.keys([r[1] for r in req])
        events = [Event(ck, pk, r[2], now) for ck, pk, r in zip(cks, pks, req, strict=True)]
        services.ingest.submit(events, [event_body(e, r[0], r[1]) for e, r in zip(events, req, strict=True)], now)


def edits_stream(rng: np.random.Generator) -> None:
    due = time.monotonic()
    for pid in rng.choice(np.arange(1, 100_001), 10_000, replace=False).tolist():
        if stop.is_set():
            return
        due += 0.1
        time.sleep(max(0.0, due - time.monotonic()))
        key = services.ids.products.key(str(pid))
        p = services.catalog.store.get(key).product
        price = None if p.price is None else round(p.price + 0.01, 2)
        services.edits.submit(dataclasses.replace(p, price=price, in_stock=not p.in_stock), now_utc())


for _ in range(3):  # warm-up batches, not counted
    services.consumer.run_once(0)
writers = [threading.Thread(target=events_stream, args=(np.random.default_rng(5),), daemon=True),
           threading.Thread(target=edits_stream, args=(np.random.default_rng(6),), daemon=True)]
for w in writers:
    w.start()
time.sleep(2.0)
stages.clear()
with write_lock._lock:
    write_lock.lock_uses.clear()
processed0, cpu0, t0, batches = services.consumer.processed, time.thread_time(), time.monotonic(), 0
while time.monotonic() - t0 < seconds:
    if services.consumer.run_once(0.5):
        batches += 1
cpu, wall, processed = time.thread_time() - cpu0, time.monotonic() - t0, services.consumer.processed - processed0
with write_lock._lock:
    locks = list(write_lock.lock_uses)
stop.set()
for w in writers:
    w.join(5)
main = [u for u in locks if u[0].endswith("[MainThread]")]
result = {
    "code": sys.modules["jobs"].__file__, "seconds": round(wall, 1), "events_per_s_offered": eps,
    "processed": processed, "batches": batches, "events_per_batch": round(processed / max(batches, 1), 2),
    "consumer_cpu_us_per_event": round(1e6 * cpu / max(processed, 1), 1),
    "consumer_stages_cpu_us_per_event": {k: {"calls": v[0], "us_per_event": round(1e6 * v[1] / max(processed, 1), 1)}
                                         for k, v in sorted(stages.items(), key=lambda kv: -kv[1][1])},
    "consumer_lock_holds_per_batch": round(len(main) / max(batches, 1), 2),
    "consumer_lock_hold_ms_per_event": round(sum(u[2] for u in main) / max(processed, 1), 3),
    "consumer_lock_wait_ms_per_event": round(sum(u[1] for u in main) / max(processed, 1), 3),
    "lock_held_share": round(sum(u[2] for u in locks) / 1e3 / wall, 3),
    "lock": write_lock._summary(locks, ("wait_ms", "hold_ms", "hold_cpu_ms")),
    "ingest_commits": services.ingest.commits, "edit_groups": services.edits.commits,
}
print(json.dumps({k: v for k, v in result.items() if k != "lock"}, indent=1))
for row in result["lock"]:
    hold = row["hold_ms"]
    print(f"  {row['label']:60s} {row['count']:5d}  hold {hold['sum']:8.1f} ms (p50 {hold['p50']:.2f})"
          f"  cpu {row['hold_cpu_ms']['sum']:8.1f} ms  wait {row['wait_ms']['sum']:8.1f} ms")
out.write_text(json.dumps(result, indent=1))
services.ingest.close()
services.edits.close()
services.db.close()  # the indexes are not saved: the copy is removed
shutil.rmtree(path, ignore_errors=True)
