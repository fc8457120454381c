"""`appliance bench feed`: feed latency and throughput over real HTTP, personalised and popular (fallback) feeds.

Per catalog size: build (or reuse) a synthetic shop, serve it with `python -m web.cli serve` in a subprocess,
and drive `GET /customers/{id}/feed` from the load generator (another process) at each concurrency.
Customers 1..C have a fresh user vector (personalised feed); customers above C have none (popular feed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from web.bench.common import (
    Server,
    add_load_arguments,
    http_json,
    parse_size,
    parse_sizes,
    percentiles,
    run_loadgen,
    size_label,
    table,
    verdict,
    work_dir,
    write_result,
)
from web.bench.synth import Shop, build_shop

TARGET_P99_MS = 10.0
TARGET_RPS = 1500.0
TARGET_SIZE = 100_000


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("feed", parents=[common], help="feed latency and throughput over HTTP (personal and popular)")
    p.add_argument("--sizes", default="10k,100k", help="catalog sizes, comma-separated (e.g. 10k,100k,1M)")
    add_load_arguments(p, customers="10k", events="200k", duration=15.0, max_requests=200_000)
    add_measure_arguments(p, warmup=300)
    p.set_defaults(run=run)


def add_measure_arguments(p: argparse.ArgumentParser, warmup: int) -> None:
    """The options `measure` reads besides the load's: connections, warm-up, page size."""
    p.add_argument("--concurrency", default="1,8", help="connections of the load generator, comma-separated")
    p.add_argument("--warmup", type=int, default=warmup, help="requests before each run, not measured")
    p.add_argument("--per-page", type=int, default=20)


def _requests(kind: str, customers: int, per_page: int, rng: np.random.Generator, n: int = 512) -> list[dict]:
    if kind == "personal":
        ids = rng.integers(1, customers + 1, n)
    else:
        ids = rng.integers(customers + 1, customers + 1_000_000, n)
    return [{"method": "GET", "path": f"/customers/{int(i)}/feed?per_page={per_page}", "tag": kind} for i in ids]


def measure(server: Server, kind: str, customers: int, args: argparse.Namespace, concurrency: int,
            spec_dir: Path) -> dict[str, Any]:
    rng = np.random.default_rng(concurrency * 7919 + (kind == "personal"))
    spec = {"port": server.port, "duration": args.duration, "max_requests": args.max_requests,
            "concurrency": concurrency, "warmup": args.warmup,
            "requests": _requests(kind, customers, args.per_page, rng), "count_substring": '"personalized":true'}
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    result = run_loadgen(spec, spec_dir)
    server_cpu = server.cpu_seconds() - cpu0
    elapsed = time.perf_counter() - t0
    tag = result["tags"].get(kind, {"latencies_ms": [], "statuses": {}, "errors": 0, "substring_hits": 0})
    stats = percentiles(tag["latencies_ms"])
    wall = result["wall_seconds"]
    ok = tag["statuses"].get("200", 0)
    return {
        "kind": kind, "concurrency": concurrency, "requests": stats["count"], "ok": ok, "errors": tag["errors"],
        "statuses": tag["statuses"], "personalized": tag["substring_hits"],
        "rps": round(ok / wall, 1) if wall else 0.0, "latency_ms": stats, "wall_seconds": round(wall, 3),
        # CPU shares of the 2 cores during the run (the warm-up is included in the server's figure)
        "server_cpu_share": round(server_cpu / elapsed, 3) if elapsed else 0.0,
        "client_cpu_share": round(result["client_cpu_seconds"] / wall, 3) if wall else 0.0,
    }


def run(args: argparse.Namespace) -> int:
    sizes = parse_sizes(args.sizes)
    customers, events = parse_size(args.customers), parse_size(args.events)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    root = work_dir(args.work_dir)
    results: list[dict[str, Any]] = []
    for size in sizes:
        print(f"feed @ {size_label(size)} products: building the shop (reused when present in {root})", flush=True)
        shop = Shop(size, customers, events)
        path = build_shop(root, shop)
        with Server(path) as server:
            t0 = time.perf_counter()
            status, first = http_json("GET", f"{server.base}/customers/1/feed", timeout=600)
            cold_ms = (time.perf_counter() - t0) * 1000
            assert status == 200, first
            entry: dict[str, Any] = {
                "products": size, "customers_with_vectors": customers, "events": events,
                "server_start_seconds": round(server.started_s, 2), "first_feed_ms": round(cold_ms, 1),
                "rss_mib_after_warmup": None, "runs": [],
            }
            for kind in ("personal", "popular"):
                for level in levels:
                    row = measure(server, kind, customers, args, level, root)
                    entry["runs"].append(row)
                    print(f"  {kind:8s} c={level}: {row['rps']:,.0f} req/s, p50 {row['latency_ms']['p50']:.2f} ms, "
                          f"p99 {row['latency_ms']['p99']:.2f} ms", flush=True)
            entry["rss_mib_after_warmup"] = round(server.rss_mib(), 1)
        results.append(entry)
    rows = [
        (size_label(e["products"]), r["kind"], r["concurrency"], r["requests"], r["rps"], r["latency_ms"]["p50"],
         r["latency_ms"]["p90"], r["latency_ms"]["p99"], r["latency_ms"]["max"],
         f"{r['personalized']}/{r['ok']}", f"{r['server_cpu_share']:.0%}", f"{r['client_cpu_share']:.0%}")
        for e in results for r in e["runs"]
    ]
    print()
    print(table("GET /customers/{id}/feed over HTTP (latency in ms, measured by the client)",
                ("products", "feed", "conns", "requests", "req/s", "p50", "p90", "p99", "max", "personal", "srv cpu",
                 "cli cpu"), rows))
    checks = _targets(results)
    print("\n".join(checks))
    out = write_result("feed", args, {"targets": {"p99_ms": TARGET_P99_MS, "rps": TARGET_RPS,
                                                  "at_products": TARGET_SIZE},
                                      "checks": checks, "sizes": results})
    print(f"wrote {out}")
    return 0


def _targets(results: list[dict[str, Any]]) -> list[str]:
    """Targets at 100k products (or the largest size measured, said so)."""
    if not results:
        return []
    at = next((e for e in results if e["products"] == TARGET_SIZE), max(results, key=lambda e: e["products"]))
    note = "" if at["products"] == TARGET_SIZE else f" (measured at {size_label(at['products'])}, target is at 100k)"
    lines = [f"targets at {size_label(at['products'])} products{note}, 2 cores shared by server and load generator:"]
    for kind in ("personal", "popular"):
        runs = [r for r in at["runs"] if r["kind"] == kind]
        if not runs:
            continue
        quiet = min(runs, key=lambda r: r["concurrency"])
        busy = max(runs, key=lambda r: r["rps"])
        lines.append(verdict(f"{kind} p99 at {quiet['concurrency']} connection(s)", quiet["latency_ms"]["p99"],
                             TARGET_P99_MS, False, "ms"))
        lines.append(verdict(f"{kind} p99 at {busy['concurrency']} connections (best throughput)",
                             busy["latency_ms"]["p99"], TARGET_P99_MS, False, "ms"))
        lines.append(verdict(f"{kind} throughput", busy["rps"], TARGET_RPS, True, "req/s"))
    return lines
