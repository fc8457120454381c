"""`appliance bench ingest`: durable events/s over HTTP, and event -> fresh personalised feed latency.

1. Freshness (on an idle server, first): for a customer never seen before, POST one click, then poll
   `GET /customers/{id}/feed` until it says `personalized: true` (the consumer has computed and saved the
   customer's vector, and the feed found it). Latency = from sending the POST to that feed's answer.
2. Throughput: the load generator (another process) POSTs batches of 1, 10 and 100 events; every 202 means
   the events and their queue messages are committed in DuckDB. Between runs the consumer's backlog is
   drained (bounded), and its processing rate reported.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from web.bench import sqs_local
from web.bench.common import (
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
from web.bench.synth import Shop, build_shop, fresh_copy

TARGET_EVENTS_PER_S = 5000.0
TARGET_FRESH_P99_MS = 50.0
NAMES = ("product_viewed", "product_clicked", "product_added_to_cart")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ingest", parents=[common], help="durable events/s over HTTP and event-to-fresh-feed latency")
    p.add_argument("--products", default="10k", help="catalog size (default 10k)")
    add_load_arguments(p, customers="10k", events="200k", duration=10.0, max_requests=100_000)
    p.add_argument("--batches", default="1,10,100", help="events per POST, comma-separated")
    p.add_argument("--concurrency", type=int, default=4, help="connections of the load generator (default 4)")
    p.add_argument("--fresh-samples", type=int, default=100, help="event -> fresh feed samples (default 100)")
    p.add_argument("--fresh-timeout", type=float, default=5.0, help="seconds one sample may take at most")
    p.add_argument("--drain-seconds", type=float, default=60.0, help="wait at most this long for the backlog")
    p.add_argument("--queue", choices=("in-process", "sqs"), default="in-process",
                   help="queue backend; sqs: a local moto server in this process (default in-process)")
    p.set_defaults(run=run)


class _Conn:
    """One keep-alive connection (cheaper than a new one per poll)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def close(self) -> None:
        self.conn.close()


def freshness(server: Server, products: int, samples: int, timeout: float) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    conn = _Conn(server.port)
    acks, fresh, polls, missed = [], [], [], 0
    try:
        for i in range(samples):
            customer = 50_000_000 + i
            event = {"customer_id": customer, "product_id": int(rng.integers(1, products + 1)),
                     "event_name": "product_clicked"}
            t0 = time.perf_counter()
            status, body = conn.call("POST", "/events", event)
            assert status == 202, body
            acks.append((time.perf_counter() - t0) * 1000)
            n, deadline = 0, time.monotonic() + timeout
            while time.monotonic() < deadline:
                n += 1
                status, feed = conn.call("GET", f"/customers/{customer}/feed?per_page=1")
                if status == 200 and feed["personalized"]:
                    fresh.append((time.perf_counter() - t0) * 1000)
                    polls.append(n)
                    break
                time.sleep(0.001)
            else:
                missed += 1
    finally:
        conn.close()
    return {"samples": samples, "post_ack_ms": percentiles(acks), "event_to_fresh_feed_ms": percentiles(fresh),
            "timed_out": missed, "polls_per_sample_mean": round(float(np.mean(polls)), 1) if polls else 0.0}


def _bodies(batch: int, products: int, customers: int, rng: np.random.Generator, n: int = 256) -> list[dict]:
    out = []
    for _ in range(n):
        events = [{"customer_id": int(c), "product_id": int(p), "event_name": NAMES[int(k)]}
                  for c, p, k in zip(rng.integers(1, customers + 1, batch), rng.integers(1, products + 1, batch),
                                     rng.integers(0, len(NAMES), batch), strict=True)]
        out.append({"method": "POST", "path": "/events", "tag": f"batch{batch}",
                    "body": json.dumps(events[0] if batch == 1 else events)})
    return out


def _queue(server: Server) -> dict[str, Any]:
    status, body = http_json("GET", f"{server.base}/queue")
    assert status == 200, body
    return body


def _backlog(queue: dict[str, Any]) -> int:
    """Messages not yet processed: visible, in flight, and (sqs) still in the DuckDB outbox."""
    return queue["depth"] + queue["in_flight"] + queue.get("outbox_backlog", 0)


@contextmanager
def queue_backend(kind: str) -> Iterator[dict[str, str]]:
    """The server's environment for the queue backend: sqs starts a local moto server with a fresh queue."""
    if kind == "in-process":
        yield {}
        return
    import boto3

    with sqs_local.moto_server() as endpoint:
        keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=sqs_local.REGION, **keys)
        queues = sqs_local.make_queues(sqs, max_receive_count=5, visibility=30)
        yield {"APPLIANCE_QUEUE__BACKEND": "sqs", "APPLIANCE_QUEUE__SQS_QUEUE_URL": queues.url,
               "APPLIANCE_QUEUE__SQS_ENDPOINT_URL": endpoint, "APPLIANCE_QUEUE__SQS_REGION": sqs_local.REGION,
               "APPLIANCE_QUEUE__SQS_ACCESS_KEY_ID": "bench", "APPLIANCE_QUEUE__SQS_SECRET_ACCESS_KEY": "bench"}


def drain(server: Server, limit: float) -> dict[str, Any]:
    """Wait (bounded) until the consumer has nothing left; how fast it went."""
    start, t0 = _queue(server), time.perf_counter()
    now = start
    while time.perf_counter() - t0 < limit and _backlog(now):
        time.sleep(0.5)
        now = _queue(server)
    elapsed = time.perf_counter() - t0
    done = now["processed"] - start["processed"]
    return {"backlog_before": _backlog(start), "backlog_after": _backlog(now),
            "processed": done, "seconds": round(elapsed, 2),
            "consumer_msgs_per_s": round(done / elapsed, 1) if elapsed > 0.01 and done else None}


def throughput(server: Server, batch: int, args: argparse.Namespace, products: int, spec_dir: Path) -> dict[str, Any]:
    rng = np.random.default_rng(batch)
    spec = {"port": server.port, "duration": args.duration, "max_requests": args.max_requests,
            "concurrency": args.concurrency, "warmup": 0, "requests": _bodies(batch, products, 50_000, rng)}
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    result = run_loadgen(spec, spec_dir)
    server_cpu = server.cpu_seconds() - cpu0
    elapsed = time.perf_counter() - t0
    tag = result["tags"].get(f"batch{batch}", {"latencies_ms": [], "statuses": {}, "errors": 0})
    accepted = tag["statuses"].get("202", 0)
    wall = result["wall_seconds"]
    return {"batch": batch, "concurrency": args.concurrency, "requests": len(tag["latencies_ms"]),
            "accepted_requests": accepted, "statuses": tag["statuses"], "errors": tag["errors"],
            "events_per_s": round(accepted * batch / wall, 1) if wall else 0.0,
            "requests_per_s": round(accepted / wall, 1) if wall else 0.0,
            "latency_ms": percentiles(tag["latencies_ms"]),
            "server_cpu_share": round(server_cpu / elapsed, 3) if elapsed else 0.0,
            "client_cpu_share": round(result["client_cpu_seconds"] / wall, 3) if wall else 0.0}


def run(args: argparse.Namespace) -> int:
    products, customers, events = parse_size(args.products), parse_size(args.customers), parse_size(args.events)
    root = work_dir(args.work_dir)
    print(f"ingest @ {size_label(products)} products, queue {args.queue}: building the shop (reused when present in "
          f"{root})", flush=True)
    path = fresh_copy(build_shop(root, Shop(products, customers, events)))
    runs = []
    with queue_backend(args.queue) as env, Server(path, env=env) as server:
        fresh = freshness(server, products, args.fresh_samples, args.fresh_timeout)
        f = fresh["event_to_fresh_feed_ms"]
        print(f"  event -> fresh feed: p50 {f['p50']:.1f} ms, p99 {f['p99']:.1f} ms ({f['count']} samples)", flush=True)
        for batch in [int(b) for b in args.batches.split(",") if b.strip()]:
            row = throughput(server, batch, args, products, root)
            row["drain"] = drain(server, args.drain_seconds)
            runs.append(row)
            print(f"  batch {batch}: {row['events_per_s']:,.0f} events/s, p99 {row['latency_ms']['p99']:.1f} ms; "
                  f"consumer backlog {row['drain']['backlog_before']:,} -> {row['drain']['backlog_after']:,}",
                  flush=True)
        rss = round(server.rss_mib(), 1)
    print()
    print(table("event -> fresh personalised feed (new customer, one click; ms)",
                ("samples", "post p50", "post p99", "fresh p50", "fresh p90", "fresh p99", "fresh max", "timed out"),
                [(f["count"], fresh["post_ack_ms"]["p50"], fresh["post_ack_ms"]["p99"], f["p50"], f["p90"], f["p99"],
                  f["max"], fresh["timed_out"])]))
    print()
    print(table(f"POST /events, durable on 202 ({args.concurrency} connections; latency in ms)",
                ("batch", "requests", "events/s", "req/s", "p50", "p99", "max", "srv cpu", "backlog", "left",
                 "consumer msg/s"),
                [(r["batch"], r["accepted_requests"], r["events_per_s"], r["requests_per_s"], r["latency_ms"]["p50"],
                  r["latency_ms"]["p99"], r["latency_ms"]["max"], f"{r['server_cpu_share']:.0%}",
                  r["drain"]["backlog_before"], r["drain"]["backlog_after"], r["drain"]["consumer_msgs_per_s"])
                 for r in runs]))
    checks = ["targets:"]
    if runs:
        best = max(runs, key=lambda r: r["events_per_s"])
        checks.append(verdict(f"durable events/s (best, batch {best['batch']})", best["events_per_s"],
                              TARGET_EVENTS_PER_S, True, "events/s"))
        single = min(runs, key=lambda r: r["batch"])
        checks.append(verdict(f"durable events/s (batch {single['batch']})", single["events_per_s"],
                              TARGET_EVENTS_PER_S, True, "events/s"))
        slowest = min((r["drain"]["consumer_msgs_per_s"] or 0.0 for r in runs), default=0.0)
        checks.append(f"  consumer (user-vector refresh) processed at least {slowest:,.0f} messages/s while draining")
    checks.append(verdict("event -> fresh feed p99", f["p99"], TARGET_FRESH_P99_MS, False, "ms"))
    print("\n".join(checks))
    out = write_result("ingest" if args.queue == "in-process" else f"ingest-{args.queue}", args, {
        "targets": {"events_per_s": TARGET_EVENTS_PER_S, "fresh_p99_ms": TARGET_FRESH_P99_MS},
        "queue": args.queue, "shop": {"products": products, "customers_with_vectors": customers, "events": events},
        "server_start_seconds": round(server.started_s, 2), "rss_mib_end": rss,
        "freshness": fresh, "throughput": runs, "checks": checks,
    })
    print(f"wrote {out}")
    return 0
