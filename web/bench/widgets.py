"""`appliance bench widgets`: latency of every widget over real HTTP (bought together for one product and for
a cart, related, looking similar, trending, recently viewed, and a page's batch call), on the synthetic shop.

The server runs in a subprocess (`python -m web.cli serve`), the load generator in another; each widget is
driven alone at each concurrency. The first call builds the widgets' tables from the events (reported)."""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import msgspec
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
    work_dir,
    write_result,
)
from web.bench.synth import Shop, build_shop

WIDGETS = ("bought-together", "cart", "related", "similar", "trending", "recently-viewed", "page")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("widgets", parents=[common], help="latency of every widget and the batch call over HTTP")
    p.add_argument("--sizes", default="100k", help="catalog sizes, comma-separated (e.g. 10k,100k)")
    add_load_arguments(p, customers="10k", events="200k", duration=8.0, max_requests=50_000)
    p.add_argument("--concurrency", default="1,8", help="connections of the load generator, comma-separated")
    p.add_argument("--warmup", type=int, default=100, help="requests before each run, not measured")
    p.set_defaults(run=run)


def _requests(widget: str, products: int, customers: int, rng: np.random.Generator, n: int = 256) -> list[dict]:
    ids = rng.integers(1, products + 1, (n, 3))
    who = rng.integers(1, customers + 1, n)

    def one(i: int) -> dict[str, Any]:
        p, c = int(ids[i, 0]), int(who[i])
        if widget in ("bought-together", "related", "similar"):
            return {"method": "GET", "path": f"/products/{p}/{widget}?k=10&customer_id={c}"}
        if widget == "trending":
            return {"method": "GET", "path": "/trending?k=10"}
        if widget == "recently-viewed":
            return {"method": "GET", "path": f"/customers/{c}/recently-viewed?k=10"}
        if widget == "cart":
            body = {"product_ids": ids[i].tolist(), "k": 10, "customer_id": c}
            return {"method": "POST", "path": "/recommendations/bought-together", "body": json.dumps(body)}
        body = {"requests": [{"model": "feed", "customer_id": c, "k": 10},
                             {"model": "related", "product_id": p, "k": 10},
                             {"model": "bought-together", "product_ids": ids[i].tolist(), "k": 6},
                             {"model": "trending", "k": 6}, {"model": "recently-viewed", "customer_id": c, "k": 6}]}
        return {"method": "POST", "path": "/recommendations", "body": json.dumps(body)}

    return [{**one(i), "tag": widget} for i in range(n)]


def run(args: argparse.Namespace) -> int:
    sizes = parse_sizes(args.sizes)
    customers, events = parse_size(args.customers), parse_size(args.events)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    root = work_dir(args.work_dir)
    results: list[dict[str, Any]] = []
    for size in sizes:
        print(f"widgets @ {size_label(size)} products: building the shop (reused when present in {root})", flush=True)
        path = build_shop(root, Shop(size, customers, events))
        with Server(path) as server:
            t0 = time.perf_counter()
            status, first = http_json("GET", f"{server.base}/trending", timeout=600)
            assert status == 200, first
            entry: dict[str, Any] = {"products": size, "events": events,
                                     "tables_build_ms": round((time.perf_counter() - t0) * 1000, 1), "runs": []}
            health = [{"method": "GET", "path": "/health/live", "tag": "health"}]
            # the trivial route at each concurrency before and after the widgets: a share is against their mean
            before = {level: _measure(server, "health", health, args, level, root) for level in levels}
            widget_runs = []
            for widget in WIDGETS:
                for level in levels:
                    rng = np.random.default_rng(level * 31 + WIDGETS.index(widget))
                    row = _measure(server, widget, _requests(widget, size, customers, rng), args, level, root)
                    widget_runs.append(row)
                    print(f"  {widget:16s} c={level}: {row['rps']:,.0f} req/s, p50 {row['latency_ms']['p50']:.2f} ms,"
                          f" p99 {row['latency_ms']['p99']:.2f} ms, errors {row['not_ok']}", flush=True)
            after = {level: _measure(server, "health", health, args, level, root) for level in levels}
            trivial = {level: (before[level]["rps"] + after[level]["rps"]) / 2 for level in levels}
            for row in widget_runs:
                row["share_of_trivial"] = round(row["rps"] / trivial[row["concurrency"]], 3)
            entry["runs"] = [*before.values(), *widget_runs, *after.values()]
        entry["in_process_ms_per_answer"] = _in_process(path, customers, size)
        results.append(entry)
    rows = [(size_label(e["products"]), r["widget"], r["concurrency"], r["requests"], r["rps"],
             r.get("share_of_trivial", ""), r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["latency_ms"]["max"],
             r["server_cpu_ms_per_request"], e["in_process_ms_per_answer"].get(r["widget"], ""), r["not_ok"])
            for e in results for r in e["runs"]]
    print()
    print(table("widgets over HTTP (latency in ms, measured by the client; health = a trivial route; share = req/s"
                " against the trivial route's at the same concurrency, before and after the widgets; server cpu ="
                " the server's CPU per request; in process = ms per answer without HTTP)",
                ("products", "widget", "conns", "requests", "req/s", "share", "p50", "p99", "max", "server cpu ms",
                 "in process ms", "not 200"), rows))
    print("tables built on first use in " + ", ".join(f"{e['tables_build_ms']:,.0f} ms at "
                                                     f"{size_label(e['products'])}" for e in results))
    out = write_result("widgets", args, {"sizes": results})
    print(f"wrote {out}")
    return 0


def _measure(server: Server, widget: str, requests: list[dict], args: argparse.Namespace, concurrency: int,
             spec_dir: Any) -> dict[str, Any]:
    spec = {"port": server.port, "duration": args.duration, "max_requests": args.max_requests,
            "concurrency": concurrency, "warmup": args.warmup, "requests": requests}
    cpu = server.cpu_seconds()
    result = run_loadgen(spec, spec_dir)
    cpu = server.cpu_seconds() - cpu
    tag = result["tags"].get(widget, {"latencies_ms": [], "statuses": {}, "errors": 0})
    stats, wall = percentiles(tag["latencies_ms"]), result["wall_seconds"]
    ok = tag["statuses"].get("200", 0)
    served = stats["count"] + args.warmup  # the server's CPU covers the warm-up requests too
    return {"widget": widget, "concurrency": concurrency, "requests": stats["count"], "not_ok": stats["count"] - ok,
            "statuses": tag["statuses"], "rps": round(ok / wall, 1) if wall else 0.0, "latency_ms": stats,
            "server_cpu_ms_per_request": round(cpu * 1000 / served, 3) if served else None}


def _in_process(path: Any, customers: int, products: int, rounds: int = 256) -> dict[str, float]:
    """Milliseconds per answer of each widget called in this process (no HTTP), the same requests as the
    HTTP runs, after one warm-up pass: what the server spends on the widget itself."""
    from appliance.config import load_config
    from web.services import build_services, start
    from web.widget_answers import answer
    from web.widget_schemas import WidgetRequest

    config = load_config(overrides={"server": {"data_dir": str(path), "load_demo": False}, "jobs": {"enabled": False}})
    services = build_services(config)
    out: dict[str, float] = {}
    try:
        start(services)
        while any(t.name == "feed-warm" for t in threading.enumerate()):
            time.sleep(0.2)
        for widget in WIDGETS:
            asks = [_as_requests(widget, r) for r in _requests(widget, products, customers,
                                                              np.random.default_rng(1), rounds)]
            for batch in asks:
                call = services.widgets.call(blocking=True)
                for request in batch:
                    answer(services, msgspec.convert(request, WidgetRequest), call)
            t0 = time.perf_counter()
            for batch in asks:
                call = services.widgets.call(blocking=True)
                for request in batch:
                    answer(services, msgspec.convert(request, WidgetRequest), call)
            out[widget] = round((time.perf_counter() - t0) * 1000 / len(asks), 4)
    finally:
        services.close()
    return out


def _as_requests(widget: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTTP request of `_requests` as the widget requests it stands for."""
    if "body" in request:
        body = json.loads(request["body"])
        return body["requests"] if widget == "page" else [{**body, "model": "bought-together"}]
    path, _, query = request["path"].partition("?")
    parts = path.strip("/").split("/")
    asked = dict(kv.split("=") for kv in query.split("&") if kv)
    if widget == "trending":
        return [{"model": "trending", "k": int(asked["k"])}]
    if widget == "recently-viewed":
        return [{"model": widget, "customer_id": parts[1], "k": int(asked["k"])}]
    model = "looking-similar" if widget == "similar" else widget
    return [{"model": model, "product_id": parts[1], "customer_id": asked["customer_id"], "k": int(asked["k"])}]
