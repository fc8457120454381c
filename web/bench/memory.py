"""`appliance bench memory`: resident memory of the served app per 100k products and per 100k customers.

Three shops: (P1, C1), (P2, C1), (P1, C2). Each is served in turn; VmRSS of the server process is read from
/proc/<pid>/status when ready, and again after a few personalised and popular feeds (which build the in-memory
catalog view and popularity). The per-100k figures are differences between two shops, so the fixed cost
(Python, torch, MiniLM, Litestar) cancels out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from web.bench.common import Server, http_json, parse_size, parse_sizes, size_label, table, work_dir, write_result
from web.bench.synth import Shop, build_shop


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("memory", parents=[common], help="server RSS per 100k products and per 100k customers")
    p.add_argument("--products", default="10k,100k", help="two catalog sizes (default 10k,100k)")
    p.add_argument("--customers", default="10k,110k", help="two counts of customers with vectors (default 10k,110k)")
    p.add_argument("--events", default="200k", help="events in every shop (default 200k)")
    p.add_argument("--serial", action="store_true", help="serve the three shops one after the other")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS (default 2)")
    p.set_defaults(run=run)


def _disk(path: Path) -> dict[str, float]:
    return {f.name: round(f.stat().st_size / 2**20, 1) for f in sorted(path.iterdir())
            if f.suffix in (".duckdb", ".hnsw")}


def measure(server: Server, path: Path, shop: Shop, settle: float) -> dict[str, Any]:
    time.sleep(settle)
    ready = server.rss_mib()
    for customer in (1, 2, shop.customers + 1, shop.customers + 2):
        status, body = http_json("GET", f"{server.base}/customers/{customer}/feed", timeout=600)
        assert status == 200, body
    time.sleep(settle)
    warm = server.rss_mib()
    return {"products": shop.products, "customers_with_vectors": shop.customers, "events": shop.events,
            "rss_ready_mib": round(ready, 1), "rss_after_feeds_mib": round(warm, 1),
            "server_start_seconds": round(server.started_s, 2), "disk_mib": _disk(path)}


def _measure_all(paths: list[Path], shops: list[Shop], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Serve the shops one after the other, or all at once (RSS is per process; start-up just shares the CPU)."""
    if args.serial:
        rows = []
        for path, shop in zip(paths, shops, strict=True):
            with Server(path) as server:
                rows.append(measure(server, path, shop, args.settle))
        return rows
    servers = [Server(path) for path in paths]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
        return [measure(server, path, shop, args.settle)
                for server, path, shop in zip(servers, paths, shops, strict=True)]
    finally:
        for server in servers:
            server.stop()


def _per_100k(a: dict[str, Any], b: dict[str, Any], key: str, field: str) -> float:
    return round((b[field] - a[field]) / ((b[key] - a[key]) / 100_000), 1)


def run(args: argparse.Namespace) -> int:
    (p1, p2), (c1, c2) = parse_sizes(args.products), parse_sizes(args.customers)
    if p1 == p2 or c1 == c2:
        raise SystemExit("memory needs two different sizes of --products and of --customers")
    events = parse_size(args.events)
    root = work_dir(args.work_dir)
    shops = [Shop(p1, c1, events), Shop(p2, c1, events), Shop(p1, c2, events)]
    paths = []
    for shop in shops:
        print(f"memory @ {size_label(shop.products)} products, {size_label(shop.customers)} customers", flush=True)
        paths.append(build_shop(root, shop))
    rows = _measure_all(paths, shops, args)
    for row in rows:
        print(f"  {size_label(row['products'])} products, {size_label(row['customers_with_vectors'])} customers: "
              f"RSS ready {row['rss_ready_mib']:,.0f} MiB, after feeds {row['rss_after_feeds_mib']:,.0f} MiB")
    base, more_products, more_customers = rows
    per = {
        "products_rss_ready_mib_per_100k": _per_100k(base, more_products, "products", "rss_ready_mib"),
        "products_rss_after_feeds_mib_per_100k": _per_100k(base, more_products, "products", "rss_after_feeds_mib"),
        "customers_rss_ready_mib_per_100k": _per_100k(base, more_customers, "customers_with_vectors", "rss_ready_mib"),
        "customers_rss_after_feeds_mib_per_100k":
            _per_100k(base, more_customers, "customers_with_vectors", "rss_after_feeds_mib"),
    }
    print()
    print(table("server RSS (VmRSS of the server process, MiB)",
                ("products", "customers", "events", "RSS ready", "RSS after feeds", "duckdb MiB", "products.hnsw",
                 "users.hnsw"),
                [(size_label(r["products"]), size_label(r["customers_with_vectors"]), size_label(r["events"]),
                  r["rss_ready_mib"], r["rss_after_feeds_mib"], r["disk_mib"].get("appliance.duckdb", 0.0),
                  r["disk_mib"].get("products.hnsw", 0.0), r["disk_mib"].get("users.hnsw", 0.0)) for r in rows]))
    print()
    print(table("per 100k (difference between two shops, MiB)", ("what", "ready", "after feeds"), [
        ("products", per["products_rss_ready_mib_per_100k"], per["products_rss_after_feeds_mib_per_100k"]),
        ("customers with vectors", per["customers_rss_ready_mib_per_100k"],
         per["customers_rss_after_feeds_mib_per_100k"]),
    ]))
    raw = 384 * 4 / 2**20 * 100_000
    print(f"  (the raw float32 vectors alone are {raw:,.1f} MiB per 100k; hnswlib adds its graph links)")
    out = write_result("memory", args, {"shops": rows, "per_100k": per, "raw_vectors_mib_per_100k": round(raw, 1)})
    print(f"wrote {out}")
    return 0
