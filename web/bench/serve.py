"""`appliance bench serve`: the feed under a storefront's load, next to the trivial route, with writes streaming.

On the benchmark's synthetic shop (customers 1..C have a fresh vector: personal feed; others: popular feed):
1. Closed loop: `wrk` (Debian package `wrk`) at each connection count against `/health/live` (the framework's
   ceiling in the same run), the personal feed and the popular feed; req/s, p50/p90/p99 and the server's CPU
   per request. Once on a quiet server, once while events (`--events-per-second`, POST /events) and product
   edits (`--edits-per-second`, PUT /products/{id} changing price and stock) stream in from another process.
2. Open loop, with the writes streaming: requests due at `--rate` per second, each latency counted from when
   it was due (`web.bench.loadgen`), so a server that falls behind shows it.
3. Target 2 (`edits-ab`, `web.bench.serve_edits`): with events streaming, the edits stream off and on in turn
   (`--ab-rounds` pairs), each route's p99 at 8 connections and each feed's under the open loop, per arm.
Client and server share the machine's cores: compare the feed with the trivial route of the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import load_config
from web.bench.common import (
    REPO,
    Server,
    add_load_arguments,
    http_json,
    parse_size,
    percentiles,
    run_loadgen,
    size_label,
    table,
    verdict,
    work_dir,
    write_result,
)
from web.bench.serve_edits import checks as edits_checks
from web.bench.serve_edits import edits_ab, print_pairs
from web.bench.synth import Shop, build_shop, fresh_copy

TARGET_RPS, TARGET_SHARE, TARGET_P99_MS = 1500.0, 1 / 3, 10.0
KINDS = ("health", "personal", "popular")
CONSUMED = ("appliance_consumer_lag_seconds_count", "appliance_consumer_lag_seconds_sum")  # the consumer's histogram
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nRESULT {"requests":%d,"seconds":%.6f,"errors":%d,"non_2xx":%d,'
    .. '"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f,"mean":%.3f}\\n', summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000))
end
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="feed vs the trivial route under wrk, with writes streaming")
    p.add_argument("--products", default="100k", help="catalog size (default 100k)")
    add_load_arguments(p, customers="10k", events="200k", duration=10.0, max_requests=1_000_000)
    p.add_argument("--concurrency", default="1,8,32", help="wrk connections, comma-separated (default 1,8,32)")
    p.add_argument("--per-page", type=int, default=20)
    add_write_arguments(p, "quiet,writes,edits-ab")
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop feed requests per second (default 1000)")
    p.add_argument("--ab-rounds", type=int, default=2,
                   help="edits-ab phase: rounds of (without edits, with edits), events streaming in both (default 2)")
    p.set_defaults(run=run)


def add_write_arguments(p: argparse.ArgumentParser, phases: str = "quiet,writes") -> None:
    """The write streams of `Writes` and the closed-loop phases (also `bench widgets`)."""
    p.add_argument("--events-per-second", type=float, default=500.0, help="events streamed in (default 500)")
    p.add_argument("--event-batch", type=int, default=5, help="events per POST /events (default 5)")
    p.add_argument("--edits-per-second", type=float, default=10.0, help="product edits streamed in (default 10)")
    p.add_argument("--phases", default=phases, help=f"phases to run, comma-separated (default {phases})")


def _script(root: Path, kind: str, customers: int, per_page: int) -> Path:
    """A wrk Lua script: random shoppers (1..C personal, above C popular) and a RESULT line at the end."""
    low, high = (1, customers) if kind == "personal" else (customers + 1, customers + 1_000_000)
    body = (f'math.randomseed({7 if kind == "personal" else 8})\n'
            f'request = function()\n  return wrk.format("GET", "/customers/" .. math.random({low}, {high}) .. '
            f'"/feed?per_page={per_page}")\nend\n')
    if kind == "health":
        body = 'request = function()\n  return wrk.format("GET", "/health/live")\nend\n'
    path = root / f"wrk-{kind}.lua"
    path.write_text(body + _DONE)
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def closed_loop(server: Server, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    cpu0, client0 = server.cpu_seconds(), _children_cpu()
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), server.base],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )
    cpu, client = server.cpu_seconds() - cpu0, _children_cpu() - client0  # wrk is the only child that ended
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")
    r = json.loads(line[len("RESULT "):])
    ok = r["requests"] - r["non_2xx"]
    return {"connections": connections, "requests": r["requests"], "errors": r["errors"], "non_2xx": r["non_2xx"],
            "rps": round(ok / r["seconds"], 1), "latency_ms": {k: r[k] for k in ("p50", "p90", "p99", "max", "mean")},
            "server_cpu_ms_per_request": round(1000 * cpu / max(r["requests"], 1), 3),
            "wrk_cpu_ms_per_request": round(1000 * client / max(r["requests"], 1), 3)}


def _edits(server: Server, products: int, rng: np.random.Generator, n: int = 200) -> list[dict]:
    """PUT bodies for `n` random products: price nudged by a cent and stock flipped (the text line, hence the
    vector, stays the same unless the price crosses a tier: an edit is a catalog patch, not an embedding)."""
    out = []
    for pid in rng.choice(np.arange(1, products + 1), size=min(n, products), replace=False).tolist():
        status, stored = http_json("GET", f"{server.base}/products/{pid}")
        assert status == 200, stored
        p = stored["product"]
        body = {k: p[k] for k in ("name", "merchant", "category_path", "color", "in_stock", "created_at")}
        body["price"] = None if p["price"] is None else round(p["price"] + 0.01, 2)
        body["in_stock"] = not p["in_stock"]
        out.append({"method": "PUT", "path": f"/products/{pid}", "body": json.dumps(body), "tag": "edit"})
    return out


def _events(products: int, customers: int, batch: int, rng: np.random.Generator, n: int = 512) -> list[dict]:
    names = ("product_viewed", "product_viewed", "product_clicked", "product_added_to_cart")
    return [{"method": "POST", "path": "/events", "tag": "events", "body": json.dumps([
        {"customer_id": int(c), "product_id": int(p), "event_name": names[int(k)]}
        for c, p, k in zip(rng.integers(1, customers + 1, batch), rng.integers(1, products + 1, batch),
                           rng.integers(0, len(names), batch), strict=True)])} for _ in range(n)]


class Writes:
    """Events and product edits streamed by two open-loop load generators (their own processes) until stopped."""

    def __init__(self, server: Server, root: Path, args: argparse.Namespace, products: int, customers: int) -> None:
        rng = np.random.default_rng(5)
        self.specs = {
            "events": {"port": server.port, "rate": args.events_per_second / args.event_batch, "duration": 86400,
                       "requests": _events(products, customers, args.event_batch, rng)},
            "edits": {"port": server.port, "rate": args.edits_per_second, "duration": 86400,
                      "requests": _edits(server, products, rng)},
        }
        self.root = root
        self.server = server
        self.batch = args.event_batch
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Writes:
        for name, spec in self.specs.items():
            if spec["rate"] <= 0:
                continue
            path = self.root / f"stream-{name}.json"
            path.write_text(json.dumps(spec))
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "web.bench.loadgen", str(path)], cwd=REPO,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)  # let both streams reach their pace
        self._consumed = (time.perf_counter(), self.server.metrics(CONSUMED))
        return self

    def __exit__(self, *exc: object) -> None:
        self.summary = {"consumer": self._consumer()}
        for name, proc in self.procs.items():
            proc.send_signal(signal.SIGTERM)  # the load generator stops and prints what it did
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate(timeout=10)
            result = json.loads(out) if out else {"tags": {}, "wall_seconds": 0.0}
            tag = result["tags"].get("events" if name == "events" else "edit", {})
            acked = sum(n for status, n in tag.get("statuses", {}).items() if status.startswith("2"))
            per_request = self.batch if name == "events" else 1
            self.summary[name] = {"offered_per_s": self.specs[name]["rate"] * per_request,
                                  "acked_per_s": round(acked * per_request / max(result["wall_seconds"], 1e-9), 1),
                                  "statuses": tag.get("statuses", {}), "errors": tag.get("errors", 0),
                                  "latency_ms": percentiles(tag.get("latencies_ms", [])),
                                  "stderr": err[-500:] if proc.returncode else ""}


    def _consumer(self) -> dict[str, float]:
        """What the event consumer processed while the streams ran (from the server's lag histogram): events
        per second and their mean lag from send to processing (a lag that grows: the consumer falls behind)."""
        t0, before = self._consumed
        after, seconds = self.server.metrics(CONSUMED), time.perf_counter() - t0
        count, lag = (after[n] - before[n] for n in CONSUMED)
        return {"processed_per_s": round(count / seconds, 1), "mean_lag_s": round(lag / max(count, 1), 3)}


def open_loop(server: Server, kind: str, customers: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(13 + (kind == "personal"))
    low, high = (1, customers + 1) if kind == "personal" else (customers + 1, customers + 1_000_000)
    requests = [{"method": "GET", "path": f"/customers/{int(i)}/feed?per_page={args.per_page}", "tag": kind}
                for i in rng.integers(low, high, 2048)]
    cpu0 = server.cpu_seconds()
    result = run_loadgen({"port": server.port, "rate": args.rate, "duration": args.duration,
                          "requests": requests}, root)
    cpu = server.cpu_seconds() - cpu0
    tag = result["tags"].get(kind, {"latencies_ms": [], "statuses": {}, "errors": 0})
    ok = tag["statuses"].get("200", 0)
    return {"kind": kind, "offered_rps": args.rate, "achieved_rps": round(ok / result["wall_seconds"], 1),
            "ok": ok, "errors": tag["errors"], "statuses": tag["statuses"],
            "latency_from_due_ms": percentiles(tag["latencies_ms"]),
            "server_cpu_ms_per_request": round(1000 * cpu / max(ok, 1), 3)}


def _wait_for_log(path: Path, offset: int, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_bytes()[offset:].decode(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no '{text}' in {path} within {timeout:g} s")
        time.sleep(0.5)


def _wait_for_start_up(log: Path, offset: int) -> float:
    """Wait until the feeds are warm and, when configured, the neighbour lists are built: the lists take a core in the
    background for a while after start-up, which must not run beside the measured routes. Returns the lists' seconds."""
    _wait_for_log(log, offset, "feeds warmed", 1800.0)  # start-up computes the shoppers' nearest products
    t0 = time.perf_counter()
    if load_config().widgets.neighbour_lists:
        _wait_for_log(log, offset, "neighbour lists ready", 1800.0)  # built, or read back from the last run's
    return round(time.perf_counter() - t0, 1)


def _phase(server: Server, script: Callable[[str], Path], kinds: Sequence[str], levels: list[int], seconds: float,
           name: str) -> list[dict]:
    """Each kind at each connection count under wrk; `script(kind)` gives the wrk script of one run."""
    rows = []
    for level in levels:
        for kind in kinds:
            row = {"phase": name, "kind": kind, **closed_loop(server, script(kind), level, seconds)}
            rows.append(row)
            print(f"  {name:6s} c={level:<3d} {kind:15s} {row['rps']:>8,.0f} req/s  p50 {row['latency_ms']['p50']:.2f}"
                  f"  p99 {row['latency_ms']['p99']:.2f} ms  cpu {row['server_cpu_ms_per_request']:.3f} ms/req"
                  f" (wrk {row['wrk_cpu_ms_per_request']:.3f})",
                  flush=True)
    return rows


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("appliance bench serve needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    products, customers, events = parse_size(args.products), parse_size(args.customers), parse_size(args.events)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    root = work_dir(args.work_dir)
    print(f"serve @ {size_label(products)} products: building the shop (reused when present in {root})", flush=True)
    path = fresh_copy(build_shop(root, Shop(products, customers, events)))
    scripts = {kind: _script(root, kind, customers, args.per_page) for kind in KINDS}
    closed, opened, writes = [], [], {}
    log = path / "server.log"
    offset = log.stat().st_size if log.exists() else 0  # the server appends to it
    with Server(path, log) as server:
        startup = {"ready_seconds": round(server.started_s, 2), "rss_mib_ready": round(server.rss_mib(), 1)}
        lists_seconds = _wait_for_start_up(log, offset)
        startup.update(warmed_seconds=round(time.perf_counter() - server.launched_at, 2),
                       rss_mib_warmed=round(server.rss_mib(), 1), neighbour_lists_seconds=lists_seconds)
        print(f"  server ready in {startup['ready_seconds']:g} s (RSS {startup['rss_mib_ready']:,.0f} MiB), warm "
              f"with its neighbour lists at {startup['warmed_seconds']:g} s (RSS {startup['rss_mib_warmed']:,.0f} MiB)",
              flush=True)
        closed_loop(server, scripts["personal"], 8, min(args.duration, 5.0))  # warm-up, not recorded
        closed_loop(server, scripts["popular"], 8, min(args.duration, 2.0))
        if "quiet" in phases:
            closed += _phase(server, scripts.__getitem__, KINDS, levels, args.duration, "quiet")
        if "writes" in phases:
            with Writes(server, root, args, products, customers) as stream:
                closed += _phase(server, scripts.__getitem__, KINDS, levels, args.duration, "writes")
                for kind in ("personal", "popular"):
                    row = open_loop(server, kind, customers, args, root)
                    opened.append(row)
                    lat = row["latency_from_due_ms"]
                    print(f"  open loop {kind:8s} {row['achieved_rps']:,.0f}/{args.rate:,.0f} req/s  p50 "
                          f"{lat['p50']:.2f}  p99 {lat['p99']:.2f} ms (from each request's due time)", flush=True)
            writes = stream.summary
        ab = None
        if "edits-ab" in phases:
            ab = edits_ab(server, scripts.__getitem__, args, root, products, customers)
        rss = round(server.rss_mib(), 1)
    _print(closed, opened, writes)
    checks = _targets(closed, opened)
    if ab is not None:
        print_pairs(ab)
        checks += edits_checks(ab)
    print("\n".join(checks))
    out = write_result("serve", args, {
        "targets": {"rps": TARGET_RPS, "share_of_trivial_route": TARGET_SHARE, "p99_ms": TARGET_P99_MS},
        "shop": {"products": products, "customers_with_vectors": customers, "events": events},
        "server_start_seconds": round(server.started_s, 2), "startup": startup, "rss_mib_end": rss,
        "closed_loop": closed, "open_loop": opened, "writes": writes, "edits_ab": ab, "checks": checks,
    })
    print(f"wrote {out}")
    return 0


def _print(closed: list[dict], opened: list[dict], writes: dict) -> None:
    ceiling = {(r["phase"], r["connections"]): r["rps"] for r in closed if r["kind"] == "health"}
    if closed:  # none when only edits-ab ran
        print()
        print(table("closed loop (wrk): latency in ms; share = req/s over /health/live's in the same phase",
                    ("phase", "conns", "route", "req/s", "share", "p50", "p90", "p99", "max", "cpu ms/req",
                     "wrk ms/req", "non-2xx"),
                    [(r["phase"], r["connections"], r["kind"], r["rps"],
                      f"{r['rps'] / max(ceiling.get((r['phase'], r['connections']), 0), 1e-9):.0%}",
                      r["latency_ms"]["p50"], r["latency_ms"]["p90"], r["latency_ms"]["p99"], r["latency_ms"]["max"],
                      r["server_cpu_ms_per_request"], r["wrk_cpu_ms_per_request"], r["non_2xx"] + r["errors"])
                     for r in closed]))
    if opened:
        print()
        print(table("open loop (writes streaming): latency in ms from each request's due time",
                    ("feed", "offered/s", "achieved/s", "p50", "p90", "p99", "max", "cpu ms/req", "errors"),
                    [(r["kind"], r["offered_rps"], r["achieved_rps"], r["latency_from_due_ms"]["p50"],
                      r["latency_from_due_ms"]["p90"], r["latency_from_due_ms"]["p99"],
                      r["latency_from_due_ms"]["max"], r["server_cpu_ms_per_request"], r["errors"]) for r in opened]))
    for name, w in writes.items():
        if name == "consumer":
            print(f"  consumer processed {w['processed_per_s']:,.0f} events/s, mean lag {w['mean_lag_s']:,.3f} s")
            continue
        print(f"  {name} streamed: {w['acked_per_s']:,.0f}/s acknowledged of {w['offered_per_s']:,.0f}/s offered, "
              f"statuses {w['statuses']}, errors {w['errors']}, p99 {w['latency_ms']['p99']:,.1f} ms")


def _targets(closed: list[dict], opened: list[dict]) -> list[str]:
    lines = ["targets (2 cores shared by the server, wrk and the write streams):"]
    for phase in ("quiet", "writes"):
        rows = [r for r in closed if r["phase"] == phase]
        ceiling = {r["connections"]: r["rps"] for r in rows if r["kind"] == "health"}
        for r in rows:
            if r["kind"] == "health" or r["connections"] < 8:
                continue
            name = f"{phase} {r['kind']} c={r['connections']}"
            lines.append(verdict(f"{name} req/s", r["rps"], TARGET_RPS, True, "req/s"))
            share = r["rps"] / max(ceiling.get(r["connections"], 0), 1e-9)
            lines.append(verdict(f"{name} share of /health/live", share, round(TARGET_SHARE, 2), True, "x"))
            if r["connections"] == 8:
                lines.append(verdict(f"{name} p99", r["latency_ms"]["p99"], TARGET_P99_MS, False, "ms"))
    for r in opened:
        lines.append(verdict(f"open loop {r['kind']} p99 at {r['offered_rps']:g} req/s",
                             r["latency_from_due_ms"]["p99"], TARGET_P99_MS, False, "ms"))
    return lines
