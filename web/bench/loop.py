"""`appliance bench loop`: what blocks the event loop, by cause, in thread CPU (web/bench/loop_probe.py).

On `bench serve`'s shop, the server runs under the probe (asyncio's loop, each callback's thread CPU). Windows,
each `--duration` seconds: `wrk -c8` on the personal and the popular feed, quiet and while `bench serve`'s write
streams run (events and product edits), then the write streams alone. Per window: loop blocks (callbacks that
held the loop for >= 2 ms of CPU) and those >= 10 ms per 10 s, their top causes with CPU ms, the GC passes, the
CPU per thread, and for the streams alone the server's CPU per acknowledged event. CPU times hold on a shared
machine; the req/s and p99 beside them do not.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path
from typing import Any

from web.bench.common import Server, add_load_arguments, parse_size, work_dir, write_result
from web.bench.serve import KINDS, Writes, _script, _wait_for_log, closed_loop
from web.bench.synth import Shop, build_shop, fresh_copy


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("loop", parents=[common], help="event-loop blocks by cause (thread CPU) under serve's load")
    p.add_argument("--products", default="100k", help="catalog size (default 100k)")
    add_load_arguments(p, customers="10k", events="200k", duration=10.0, max_requests=1_000_000)
    p.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    p.add_argument("--per-page", type=int, default=20)
    p.add_argument("--events-per-second", type=float, default=500.0, help="events streamed in (default 500)")
    p.add_argument("--event-batch", type=int, default=5, help="events per POST /events (default 5)")
    p.add_argument("--edits-per-second", type=float, default=10.0, help="product edits streamed in (default 10)")
    p.set_defaults(run=run)


class _Windows:
    def __init__(self, server: Server, out: Path) -> None:
        self.server, self.out, self.n = server, out, 0

    def measure(self, name: str, work: Any) -> dict[str, Any]:
        self.server.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        cpu0 = self.server.cpu_seconds()
        row = work() or {}
        cpu = self.server.cpu_seconds() - cpu0
        self.server.proc.send_signal(signal.SIGUSR2)
        self.n += 1
        path = self.out.with_name(f"{self.out.stem}-{self.n}.json")
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        probe = json.loads(path.read_text())
        probe.pop("blocks")
        result = {"window": name, "server_cpu_s": round(cpu, 2), **row, "probe": probe}
        top = ", ".join(f"{c['cause']} {c['per_10s']:g}/10s {c['cpu_ms']:.0f} ms" for c in probe["causes"][:4])
        print(f"  {name:18s} blocks/10s {probe['blocks_per_10s']:6.1f}"
              f" (>=10 ms {probe['blocks_over_10ms_per_10s']:5.1f},"
              f" waits >=10 ms {probe['waits_over_10ms_per_10s']:5.1f})  loop cpu {probe['loop_callback_cpu_s']:.2f} s"
              f"  {top}", flush=True)
        return result


def run(args: argparse.Namespace) -> int:
    products, customers, events = parse_size(args.products), parse_size(args.customers), parse_size(args.events)
    root = work_dir(args.work_dir)
    path = fresh_copy(build_shop(root, Shop(products, customers, events)))
    scripts = {kind: _script(root, kind, customers, args.per_page) for kind in KINDS}
    log, probe_out = path / "server.log", root / "loop-probe.json"
    for old in root.glob("loop-probe-*.json"):
        old.unlink()
    offset = log.stat().st_size if log.exists() else 0
    windows = []
    with Server(path, log, command=["web.bench.loop_probe", str(probe_out)]) as server:
        _wait_for_log(log, offset, "feeds warmed", 900.0)
        closed_loop(server, scripts["personal"], 8, 5.0)  # warm-up, not recorded
        w = _Windows(server, probe_out)
        feeds = ("personal", "popular")
        for kind in feeds:
            windows.append(w.measure(f"quiet {kind}", lambda k=kind: closed_loop(
                server, scripts[k], args.connections, args.duration)))
        with Writes(server, root, args, products, customers) as stream:
            for kind in feeds:
                windows.append(w.measure(f"writes {kind}", lambda k=kind: closed_loop(
                    server, scripts[k], args.connections, args.duration)))
            windows.append(w.measure("writes alone", lambda: time.sleep(args.duration)))
        alone = windows[-1]
        acked = stream.summary.get("events", {}).get("acked_per_s", 0.0) * args.duration
        alone["server_cpu_ms_per_acked_event"] = round(1000 * alone["server_cpu_s"] / max(acked, 1), 3)
        print(f"  writes alone: {alone['server_cpu_ms_per_acked_event']} ms of server CPU per acknowledged event "
              f"({stream.summary.get('events', {}).get('acked_per_s')} events/s acknowledged)")
    out = write_result("loop", args, {"shop": {"products": products, "customers_with_vectors": customers},
                                      "windows": windows, "writes": stream.summary})
    print(f"wrote {out}")
    return 0
