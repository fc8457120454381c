"""`appliance bench widgets`: every widget (bought together for one product and for a cart, related, looking
similar, trending, recently viewed, and a page's batch call) under `bench serve`'s load, on its synthetic shop.

Closed loop with `wrk` at each connection count, next to `/health/live` (the trivial route's ceiling in the same
phase), once quiet and once while `bench serve`'s write streams run (events and product edits). The products asked
about are drawn from the shop's own events (a product page per event: the storefront's skew, many products and
the popular ones again and again), the shoppers from 1..C; each run draws its own order from the same lists.
Then each widget's answers in this process (no HTTP): what the server spends on the widget itself.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from appliance.config import load_config
from web.bench.common import (
    Server,
    add_load_arguments,
    http_json,
    parse_size,
    size_label,
    table,
    work_dir,
    write_result,
)
from web.bench.serve import (
    _DONE,
    TARGET_P99_MS,
    TARGET_RPS,
    TARGET_SHARE,
    Writes,
    _phase,
    _print,
    _targets,
    _wait_for_start_up,
    add_write_arguments,
    closed_loop,
)
from web.bench.synth import Shop, build_shop, fresh_copy

WIDGETS = ("bought-together", "cart", "related", "similar", "trending", "recently-viewed", "page")
KINDS = ("health", *WIDGETS)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("widgets", parents=[common], help="every widget and the page's call under wrk, with writes")
    p.add_argument("--products", default="100k", help="catalog size (default 100k)")
    add_load_arguments(p, customers="10k", events="200k", duration=5.0, max_requests=1_000_000)
    p.add_argument("--concurrency", default="1,8,32", help="wrk connections, comma-separated (default 1,8,32)")
    add_write_arguments(p)
    p.add_argument("--distinct", type=int, default=20_000, help="requests drawn per widget (default 20000)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of each widget at 8 connections first")
    p.add_argument("--in-process-rounds", type=int, default=256, help="requests per widget timed in process (0: none)")
    p.set_defaults(run=run)


def traffic(path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` products drawn from the shop's events (read before the server opens the file): the products a
    storefront's visitors look at, as often as they do."""
    from storage.db import Database

    db = Database(path / "appliance.duckdb")
    try:
        seen = np.array([row[0] for row in db.read("SELECT product_id FROM events")], np.int64)
    finally:
        db.close()
    return rng.choice(seen, n) if len(seen) else rng.integers(1, 2, n)


def requests_of(widget: str, products: np.ndarray, customers: int, rng: np.random.Generator) -> list[dict]:
    """One request per drawn product (a cart: three drawn products), `k=10`; product widgets pass a
    `customer_id` (those who bought something get answers without their purchases)."""
    if widget == "health":
        return [{"method": "GET", "path": "/health/live", "tag": widget}]
    n = len(products) // 3 if widget in ("cart", "page") else len(products)
    ids = products[:3 * n].reshape(-1, 3) if widget in ("cart", "page") else products.reshape(-1, 1)
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


class Scripts:
    """wrk scripts over the request lists: each list in a data file read at wrk's start, each run a new seed
    (so no run replays another's order)."""

    def __init__(self, root: Path, requests: dict[str, list[dict]]) -> None:
        self.root, self.seeds = root, itertools.count(11)
        self.data = {}
        for kind, listed in requests.items():
            self.data[kind] = root / f"wrk-widget-{kind}.tsv"
            self.data[kind].write_text("".join(f"{r['method']}\t{r['path']}\t{r.get('body') or ''}\n"
                                               for r in listed))

    def __call__(self, kind: str) -> Path:
        path = self.root / f"wrk-widget-{kind}.lua"
        path.write_text(f"""math.randomseed({next(self.seeds)})
local wires = {{}}
init = function(args)
  for line in io.lines("{self.data[kind]}") do
    local method, path, body = line:match("^(%u+)\\t([^\\t]+)\\t(.*)$")
    if body == "" then
      wires[#wires + 1] = wrk.format(method, path)
    else
      wires[#wires + 1] = wrk.format(method, path, {{["Content-Type"] = "application/json"}}, body)
    end
  end
end
request = function()
  return wires[math.random(#wires)]
end
""" + _DONE)
        return path


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("appliance bench widgets needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    products, customers, events = parse_size(args.products), parse_size(args.customers), parse_size(args.events)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    root = work_dir(args.work_dir)
    print(f"widgets @ {size_label(products)} products: building the shop (reused when present in {root})", flush=True)
    path = fresh_copy(build_shop(root, Shop(products, customers, events)))
    rng = np.random.default_rng(3)
    asked = traffic(path, args.distinct * 3, rng)
    requests = {kind: requests_of(kind, asked[:args.distinct * (3 if kind in ("cart", "page") else 1)], customers,
                                  rng) for kind in KINDS}
    distinct = {kind: len({r["path"] + (r.get("body") or "") for r in listed}) for kind, listed in requests.items()}
    scripts = Scripts(root, requests)
    closed: list[dict] = []
    log = path / "server.log"
    offset = log.stat().st_size if log.exists() else 0
    with Server(path, log) as server:
        lists_s = _wait_for_start_up(log, offset)
        t0 = time.perf_counter()
        status, first = http_json("GET", f"{server.base}/trending", timeout=600)
        assert status == 200, first
        tables_ms = round((time.perf_counter() - t0) * 1000, 1)
        for kind in WIDGETS:  # warm-up, not recorded: a storefront's caches hold its popular products
            closed_loop(server, scripts(kind), 8, args.warmup)
        if "quiet" in phases:
            closed += _phase(server, scripts, KINDS, levels, args.duration, "quiet")
        with Writes(server, root, args, products, customers) as stream:
            if "writes" in phases:
                closed += _phase(server, scripts, KINDS, levels, args.duration, "writes")
        writes = stream.summary
    _print(closed, [], writes)
    checks = _targets(closed, [])
    print("\n".join(checks))
    timed = _in_process(path, {kind: requests[kind][:args.in_process_rounds] for kind in WIDGETS}) \
        if args.in_process_rounds else {}
    print(table("in process (no HTTP): ms of this thread's CPU per answer, the same requests after a warm-up pass",
                ("widget", "cpu ms"), list(timed.items())))
    out = write_result("widgets", args, {
        "targets": {"rps": TARGET_RPS, "share_of_trivial_route": TARGET_SHARE, "p99_ms": TARGET_P99_MS},
        "shop": {"products": products, "customers_with_vectors": customers, "events": events},
        "distinct_requests": distinct, "tables_build_ms": tables_ms,
        "neighbour_lists_wait_s": lists_s, "closed_loop": closed, "writes": writes,
        "checks": checks, "in_process_ms_per_answer": timed,
    })
    print(f"wrote {out}")
    return 0


def _in_process(path: Path, requests: dict[str, list[dict]]) -> dict[str, float]:
    """Milliseconds of this thread's CPU per answer of each widget called in this process (no HTTP), after one
    warm-up pass over the same requests (CPU, not wall time: the machine is shared)."""
    from web.services import build_services
    from web.startup import start
    from web.widget_answers import answer
    from web.widget_schemas import WidgetRequest

    config = load_config(overrides={"server": {"data_dir": str(path), "load_demo": False}, "jobs": {"enabled": False}})
    services = build_services(config)
    out: dict[str, float] = {}
    try:
        start(services)
        while any(t.name == "feed-warm" for t in threading.enumerate()):
            time.sleep(0.2)
        if config.widgets.neighbour_lists:
            services.widgets.lists.built.wait(1800.0)
        for widget, listed in requests.items():
            asks = [_as_requests(widget, r) for r in listed]
            for batch in asks:
                call = services.widgets.call(blocking=True)
                for request in batch:
                    answer(services, msgspec.convert(request, WidgetRequest), call)
            t0 = time.thread_time()
            for batch in asks:
                call = services.widgets.call(blocking=True)
                for request in batch:
                    answer(services, msgspec.convert(request, WidgetRequest), call)
            out[widget] = round((time.thread_time() - t0) * 1000 / len(asks), 4)
    finally:
        services.close()
    return out


def _as_requests(widget: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTTP request of `requests_of` as the widget requests it stands for."""
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
