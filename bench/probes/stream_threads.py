"""Probe (BENCHMARKS.md "Feed under load", fourteenth round): the server CPU each streamed event costs, by thread.

A real server (`web.bench.loop_probe`, which records every thread's CPU in a window) on a fresh copy of a built
`bench serve` shop; once its feeds are warm, `bench serve`'s two write streams (events at EPS/s in requests of 5,
product edits at 10/s, each its own load-generator process) for SECONDS, no feed asked. Prints and writes the
server's CPU per acknowledged event, in all and by thread name, and the events the consumer processed.
A/B: run it with `PYTHONPATH` on an export of the other commit (`git archive`); the probe file is the same.
Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/probes/stream_threads.py SHOP_DIR SECONDS EPS OUT.json"""
import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from web.bench.common import Server
from web.bench.serve import CONSUMED, Writes, _wait_for_start_up

src, seconds, eps, out = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
path = src.with_name(src.name + ".streams")
shutil.rmtree(path, ignore_errors=True)
shutil.copytree(src, path)
shop = json.loads((path / "shop.json").read_text())
window = out.with_name(out.stem + "-window")
log = path / "server.log"
env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
COUNT = CONSUMED[0]  # the consumer's lag histogram's count
args = argparse.Namespace(events_per_second=eps, event_batch=5, edits_per_second=10.0)


def processed(server: Server) -> float:
    """Events the consumer has processed: the count of its lag histogram on /metrics."""
    return server.metrics([COUNT])[COUNT]

with Server(path, log, env=env, command=("web.bench.loop_probe", str(window) + ".json")) as server:
    _wait_for_start_up(log, 0)
    with Writes(server, path.parent, args, shop["products"], shop["customers"]) as stream:
        time.sleep(3.0)
        done0, cpu0 = processed(server), server.cpu_seconds()
        server.proc.send_signal(signal.SIGUSR1)
        t0 = time.monotonic()
        time.sleep(seconds)
        server.proc.send_signal(signal.SIGUSR2)
        wall, cpu, done = time.monotonic() - t0, server.cpu_seconds() - cpu0, processed(server) - done0
        time.sleep(1.0)
    summary = json.loads(Path(f"{window}-1.json").read_text())
acked = stream.summary["events"]["acked_per_s"] * wall
threads = summary.get("thread_cpu_s", {})
result = {
    "code": os.environ.get("PYTHONPATH") or "worktree", "seconds": round(wall, 1), "events_per_s_offered": eps,
    "writes": stream.summary, "events_acked": round(acked), "events_processed": done,
    "server_cpu_s": round(cpu, 2), "server_cpu_us_per_acked_event": round(1e6 * cpu / max(acked, 1), 1),
    "thread_cpu_us_per_acked_event": {k: round(1e6 * v / max(acked, 1), 1)
                                      for k, v in sorted(threads.items(), key=lambda kv: -kv[1])},
    "gc": summary.get("gc"),
}
print(json.dumps({k: v for k, v in result.items() if k != "writes"}, indent=1))
out.write_text(json.dumps(result, indent=1))
shutil.rmtree(path, ignore_errors=True)
