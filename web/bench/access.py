"""`appliance bench access`: what keys and rate limiting cost the feed, as a ratio measured in one run.

One synthetic shop, copied, served at the same time by two `python -m web.cli serve` processes:
- `loopback`: no keys, no rate limit (the shipped default on 127.0.0.1);
- `keyed`: public, server and admin keys (several each, as during a rotation), every request carrying a public
  key, a public rate limit whose bucket never empties (so every request pays for the lookup and the refill).
Both run the Host and content-type checks. The load generator alternates between them in short slices (A B A B
...), so the drift of a shared machine falls on both alike; the ratio is keyed req/s over loopback req/s, per
slice (median) and over all slices. The guard's own cost is also timed in process (microseconds per request:
key lookup among all keys, token bucket, scope check), beside the feed's mean latency.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from appliance.config import load_config
from web.access import Access, Scope, authorize, needs
from web.bench.common import (
    Server,
    add_load_arguments,
    parse_size,
    percentiles,
    run_loadgen,
    table,
    work_dir,
    write_result,
)
from web.bench.synth import Shop, build_shop

KEY = "pk_bench_storefront_0001"
MODES = ("loopback", "keyed")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("access", parents=[common], help="feed req/s with and without keys + rate limiting")
    p.add_argument("--products", default="10k", help="catalog size (default 10k)")
    add_load_arguments(p, customers="2k", events="40k", duration=3.0, max_requests=100_000)
    p.add_argument("--concurrency", type=int, default=8, help="connections of the load generator (default 8)")
    p.add_argument("--slices", type=int, default=10, help="A/B slices of --duration seconds each (default 10)")
    p.add_argument("--keys", type=int, default=4, help="keys configured per scope in keyed mode (default 4)")
    p.add_argument("--warmup", type=int, default=100, help="requests before each slice, not measured")
    p.set_defaults(run=run)


def _env(mode: str, keys: int) -> dict[str, str]:
    if mode == "loopback":
        return {"APPLIANCE_JOBS__ENABLED": "false"}
    listed = {scope: ",".join([KEY] * (scope == "public") + [f"{scope}_bench_key_{i:04d}" for i in range(keys - 1)])
              for scope in ("public", "server", "admin")}
    return {"APPLIANCE_JOBS__ENABLED": "false", "APPLIANCE_SECURITY__PUBLIC_KEYS": listed["public"],
            "APPLIANCE_SECURITY__SERVER_KEYS": listed["server"], "APPLIANCE_SECURITY__ADMIN_KEYS": listed["admin"],
            "APPLIANCE_SECURITY__PUBLIC_RATE": "1000000.0", "APPLIANCE_SECURITY__PUBLIC_BURST": "1000000"}


def _measure(server: Server, mode: str, customers: int, args: argparse.Namespace, spec_dir: Any) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    headers = {"Authorization": f"Bearer {KEY}"} if mode == "keyed" else {}
    requests = [{"method": "GET", "path": f"/customers/{int(i)}/feed?per_page=20", "tag": mode, "headers": headers}
                for i in rng.integers(1, customers + 1, 512)]
    spec = {"port": server.port, "duration": args.duration, "max_requests": args.max_requests,
            "concurrency": args.concurrency, "warmup": args.warmup, "requests": requests}
    result = run_loadgen(spec, spec_dir)
    tag = result["tags"].get(mode, {"latencies_ms": [], "statuses": {}, "errors": 0})
    ok = tag["statuses"].get("200", 0)
    wall = result["wall_seconds"]
    return {"mode": mode, "ok": ok, "statuses": tag["statuses"], "errors": tag["errors"], "wall_seconds": wall,
            "rps": round(ok / wall, 1) if wall else 0.0, "latency_ms": percentiles(tag["latencies_ms"])}


def guard_microseconds(keys: int, n: int = 20_000) -> dict[str, float]:
    """The app guard's cost per request, in process, for a public key among `keys` per scope and for loopback
    mode (no key)."""
    from litestar.connection import ASGIConnection

    env = {k: v for k, v in _env("keyed", keys).items() if "SECURITY" in k}
    modes = {"keyed": (load_config(env=env).security, {"authorization": f"Bearer {KEY}"}),
             "loopback": (load_config(env={}).security, {})}
    out = {}
    for mode, (security, headers) in modes.items():
        app = SimpleNamespace(state=SimpleNamespace(access=Access(security)))
        scope = {"type": "http", "method": "GET", "path": "/customers/1/feed", "client": ("127.0.0.1", 5000),
                 "headers": [(k.encode(), v.encode()) for k, v in headers.items()], "litestar_app": app,
                 "app": app, "query_string": b"", "state": {}}
        handler = SimpleNamespace(opt=needs(Scope.PUBLIC))

        async def loop(scope: dict = scope, handler: Any = handler, guard: Any = authorize) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                await guard(ASGIConnection(scope), handler)
            return time.perf_counter() - t0

        out[mode] = round(asyncio.run(loop()) / n * 1e6, 2)
        if mode == "loopback":  # the floor: building the connection and reading a header, no guard

            async def floor(connection: Any, _: Any) -> None:
                connection.headers.get("authorization")

            out["no_guard"] = round(asyncio.run(loop(guard=floor)) / n * 1e6, 2)
    return out


def run(args: argparse.Namespace) -> int:
    customers = parse_size(args.customers)
    root = work_dir(args.work_dir)
    shop = Shop(parse_size(args.products), customers, parse_size(args.events))
    print(f"access @ {shop.products:,} products: building the shop (reused when present in {root})", flush=True)
    path = build_shop(root, shop)
    copies = {}
    for mode in MODES:  # DuckDB admits one process per file: each server gets its own copy
        copies[mode] = root / f"{shop.name}-{mode}"
        shutil.rmtree(copies[mode], ignore_errors=True)
        shutil.copytree(path, copies[mode])
    servers = {mode: Server(copies[mode], env=_env(mode, args.keys)) for mode in MODES}
    runs: list[dict[str, Any]] = []
    try:
        for server in servers.values():
            server.launch()
        for server in servers.values():
            server.wait_ready()
        for slice_ in range(1, args.slices + 1):
            for mode in MODES:
                runs.append({"slice": slice_, **_measure(servers[mode], mode, customers, args, root)})
                bad = {s: n for s, n in runs[-1]["statuses"].items() if s != "200"}
                if bad or runs[-1]["errors"]:
                    raise RuntimeError(f"{mode}: non-200 answers {bad}, {runs[-1]['errors']} errors")
            a, b = runs[-2:]
            print(f"  slice {slice_:2d}: loopback {a['rps']:6,.0f} req/s, keyed {b['rps']:6,.0f} req/s", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        for copy in copies.values():
            shutil.rmtree(copy, ignore_errors=True)
    ratios = [b["rps"] / a["rps"] for a, b in zip(runs[::2], runs[1::2], strict=True) if a["rps"]]
    summary = {m: _summary([r for r in runs if r["mode"] == m]) for m in MODES}
    overall = summary["keyed"]["rps"] / summary["loopback"]["rps"] if summary["loopback"]["rps"] else 0.0
    print()
    print(table(f"GET /customers/{{id}}/feed, {args.concurrency} connections, {args.slices} slices of "
                f"{args.duration:g} s per mode (latency in ms, measured by the client)",
                ("mode", "requests", "req/s", "p50", "p99", "mean"),
                [(m, s["ok"], s["rps"], s["p50"], s["p99"], s["mean"]) for m, s in summary.items()]))
    median = float(np.median(ratios)) if ratios else 0.0
    print(f"keyed / loopback req/s: {overall:.3f} over all slices, median per slice {median:.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})")
    guard = guard_microseconds(args.keys)
    print(f"the guard in process: {guard['keyed']:.1f} us per request keyed, {guard['loopback']:.1f} us loopback, "
          f"{guard['no_guard']:.1f} us without it (a keyed feed request takes {summary['keyed']['mean']:.2f} ms "
          f"on average at {args.concurrency} connections)")
    out = write_result("access", args, {"products": shop.products, "customers_with_vectors": customers,
                                        "keys_per_scope": args.keys, "runs": runs, "summary": summary,
                                        "ratio_per_slice": ratios, "ratio_median": round(median, 4),
                                        "ratio": round(overall, 4), "guard_us": guard})
    print(f"wrote {out}")
    return 0


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sum(r["ok"] for r in runs)
    wall = sum(r["wall_seconds"] for r in runs)
    return {"ok": ok, "rps": round(ok / wall, 1) if wall else 0.0,
            "p50": float(np.median([r["latency_ms"]["p50"] for r in runs])),
            "p99": float(np.median([r["latency_ms"]["p99"] for r in runs])),
            "mean": round(sum(r["latency_ms"]["mean"] * r["ok"] for r in runs) / ok, 3) if ok else 0.0}
