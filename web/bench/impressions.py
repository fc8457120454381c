"""`appliance bench impressions`: feed throughput with impression logging on and off, in the same run.

One synthetic shop (and a copy: DuckDB admits one process per file) served by two servers at once, one with
`analytics.impressions = false`, one with `true`. Short runs of the same personal and popular feed requests as
`appliance bench feed` alternate between them (the order flips each round), so a drift of the shared machine falls
on both; the ratio on / off is the median of the per-round pairs. Also how many impressions the server with
logging on wrote and dropped (from its /metrics).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from statistics import median
from typing import Any

from appliance.config import load_config
from appliance.types import Scored, now_utc
from jobs.attribution import ImpressionLog
from storage.db import Database
from storage.ids import ShopIds
from storage.impressions import ImpressionStore
from web.bench.common import Server, add_load_arguments, parse_size, table, work_dir, write_result
from web.bench.feed import add_measure_arguments, measure
from web.bench.synth import Shop, build_shop


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("impressions", parents=[common], help="feed req/s with impression logging on and off")
    p.add_argument("--size", default="10k", help="catalog size (default 10k)")
    add_load_arguments(p, customers="10k", events="100k", duration=3.0, max_requests=100_000)
    add_measure_arguments(p, warmup=50)
    p.add_argument("--rounds", type=int, default=6, help="off/on pairs per feed and level, order alternating")
    p.set_defaults(run=run)


def _impression_counts(server: Server) -> dict[str, float]:
    wanted = {"appliance_impressions_written_total": "written", "appliance_impressions_dropped_total": "dropped",
              "appliance_impression_buffer_items": "buffered"}
    return {wanted[name]: value for name, value in server.metrics(wanted).items()}


def run(args: argparse.Namespace) -> int:
    size, customers, events = parse_size(args.size), parse_size(args.customers), parse_size(args.events)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    root = work_dir(args.work_dir)
    print(f"impressions @ {args.size} products: building the shop (reused when present in {root})", flush=True)
    shop = Shop(size, customers, events)
    paths = {"off": build_shop(root, shop), "on": root / f"{shop.name}-impressions-on"}
    shutil.rmtree(paths["on"], ignore_errors=True)
    shutil.copytree(paths["off"], paths["on"])  # DuckDB admits one process per file: a copy for the other
    runs: list[dict[str, Any]] = []
    servers = {mode: Server(paths[mode], env={"APPLIANCE_ANALYTICS__IMPRESSIONS": str(mode == "on").lower()})
               for mode in ("off", "on")}
    with servers["off"], servers["on"]:
        for round_ in range(args.rounds):
            for kind in ("personal", "popular"):
                for level in levels:
                    for mode in (("off", "on") if round_ % 2 == 0 else ("on", "off")):
                        row = {"round": round_, "impressions": mode,
                               **measure(servers[mode], kind, customers, args, level, root)}
                        runs.append(row)
                        print(f"  round {round_} {kind:8s} c={level} impressions {mode:3s}: {row['rps']:,.0f} req/s, "
                              f"p99 {row['latency_ms']['p99']:.2f} ms", flush=True)
        counts = _impression_counts(servers["on"])
    print(f"impressions recorded by the server with logging on: {counts}", flush=True)
    cost = _cpu_cost(root, args.per_page)
    print(f"CPU per answer of {args.per_page} items, in process: {cost}", flush=True)
    summary = _summary(runs, levels)
    print()
    print(table("GET /customers/{id}/feed, impression logging off vs on (medians over rounds, paired in time)",
                ("feed", "conns", "req/s off", "req/s on", "on/off", "p99 off", "p99 on"),
                [(s["kind"], s["concurrency"], s["rps_off"], s["rps_on"], f"{s['ratio']:.3f}", s["p99_ms_off"],
                  s["p99_ms_on"]) for s in summary]))
    out = write_result("impressions", args, {"products": size, "customers_with_vectors": customers,
                                             "events": events, "impression_counts": counts, "cpu_cost": cost,
                                             "summary": summary,
                                             "runs": runs})
    print(f"wrote {out}")
    return 0


def _cpu_cost(root: Path, per_page: int, answers: int = 300, rounds: int = 50) -> dict[str, float]:
    """CPU microseconds (all threads, DuckDB's included) per answer: recording it on the request path, and
    writing its items in the batched flush (a CHECKPOINT at the end is counted too). Robust on a shared machine,
    unlike req/s."""
    path = root / "impression-cost.duckdb"
    path.unlink(missing_ok=True)
    db = Database(path)
    try:
        config = load_config(overrides={"analytics": {"buffer_max": answers * per_page}}).analytics
        customers = ShopIds.open(db).customers
        log = ImpressionLog(ImpressionStore(db), config, now_utc, lambda ids: customers.keys(ids, create=True))
        sources = ("personal", "personal", "popular", "new")
        items = [Scored(i, 1.0, sources[i % 4]) for i in range(1, per_page + 1)]
        served = written = 0.0
        for r in range(rounds):
            t0 = time.process_time()
            for i in range(answers):
                log.served(str(r * answers + i), "feed", items, 1, "mean")
            t1 = time.process_time()
            log.flush()
            written += time.process_time() - t1
            served += t1 - t0
        t2 = time.process_time()
        db.checkpoint()
        written += time.process_time() - t2
    finally:
        db.close()
        path.unlink(missing_ok=True)
    n = answers * rounds
    return {"items_per_answer": per_page, "answers": n, "served_us": round(served / n * 1e6, 2),
            "flush_us": round(written / n * 1e6, 2)}


def _summary(runs: list[dict[str, Any]], levels: list[int]) -> list[dict[str, Any]]:
    out = []
    for kind in ("personal", "popular"):
        for level in levels:
            def pick(mode: str, key: str, kind: str = kind, level: int = level) -> float:
                values = [r["rps"] if key == "rps" else r["latency_ms"]["p99"] for r in runs
                          if r["kind"] == kind and r["concurrency"] == level and r["impressions"] == mode]
                return round(median(values), 2) if values else 0.0

            pairs = {}
            for r in runs:
                if r["kind"] == kind and r["concurrency"] == level:
                    pairs.setdefault(r["round"], {})[r["impressions"]] = r["rps"]
            ratios = [p["on"] / p["off"] for p in pairs.values() if p.get("off") and "on" in p]
            out.append({"kind": kind, "concurrency": level, "rps_off": pick("off", "rps"), "rps_on": pick("on", "rps"),
                        "ratio": round(median(ratios), 3) if ratios else 0.0,  # median of the paired ratios
                        "p99_ms_off": pick("off", "p99"), "p99_ms_on": pick("on", "p99")})
    return out
