"""`appliance bench encoding`: real MiniLM product lines per second in batches, and one line's latency.

Lines are the demo shop's (`appliance.demo.generate_demo`, `appliance.text.product_text`), encoded with the
appliance's `Encoder` on `server.torch_threads` torch threads, as the server does.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from appliance.config import load_config
from appliance.demo import generate_demo
from appliance.encoder import Encoder
from appliance.text import product_text
from appliance.types import now_utc
from web.bench.common import percentiles, table, write_result


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("encoding", parents=[common], help="MiniLM products/s in batches and one line's latency")
    p.add_argument("--lines", type=int, default=1000, help="product lines (default 1000)")
    p.add_argument("--batch-sizes", default="16,64,256", help="encoder batch sizes to try")
    p.add_argument("--singles", type=int, default=200, help="one-line encodes for the latency (default 200)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, encoder: Encoder | None = None) -> int:
    import torch

    config = load_config()
    torch.set_num_threads(config.server.torch_threads)
    shop = generate_demo(config.demo.seed, args.lines, 0, 1, now_utc())
    lines = [product_text(p, config.catalog.tier_thresholds) for p in shop.products]
    encoder = encoder or Encoder(config.encoder.model, config.encoder.dim, config.encoder.batch_size)
    t0 = time.perf_counter()
    encoder.load()
    load_s = time.perf_counter() - t0
    shipped = encoder.batch_size
    encoder.encode(lines[:32])  # warm-up
    batches = []
    try:
        for size in sorted({int(b) for b in args.batch_sizes.split(",") if b.strip()} | {config.encoder.batch_size}):
            encoder.batch_size = size
            t0 = time.perf_counter()
            vectors = encoder.encode(lines)
            elapsed = time.perf_counter() - t0
            assert vectors.shape == (len(lines), config.encoder.dim)
            batches.append({"batch_size": size, "lines": len(lines), "seconds": round(elapsed, 3),
                            "products_per_s": round(len(lines) / elapsed, 1), "shipped": size == shipped})
            print(f"  batch {size}: {len(lines) / elapsed:,.0f} products/s", flush=True)
    finally:
        encoder.batch_size = shipped
    times = []
    for i in range(args.singles):
        t0 = time.perf_counter()
        encoder.encode([lines[i % len(lines)]])
        times.append((time.perf_counter() - t0) * 1000)
    single = percentiles(times)
    print()
    title = f"MiniLM ({config.encoder.model}) on {torch.get_num_threads()} torch threads, {len(lines):,} demo lines"
    print(table(title,
                ("batch size", "products/s", "seconds", "shipped"),
                [(b["batch_size"], b["products_per_s"], b["seconds"], "yes" if b["shipped"] else "") for b in batches]))
    print(f"  one line (what PUT /products/{{id}} waits for): p50 {single['p50']:.2f} ms, p99 {single['p99']:.2f} ms;"
          f" model load {load_s:.1f} s")
    mean_chars = sum(len(t) for t in lines) / len(lines)
    out = write_result("encoding", args, {
        "model": config.encoder.model, "torch_threads": torch.get_num_threads(), "lines": len(lines),
        "mean_line_chars": round(mean_chars, 1), "example_line": lines[0], "model_load_seconds": round(load_s, 2),
        "batches": batches, "single_line_ms": single,
    })
    print(f"wrote {out}")
    return 0
