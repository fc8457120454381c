"""`appliance bench import-products`: a bulk catalog import end to end against the encoder's own rate, and its RSS.

For each size: a JSON Lines file of the synthetic shop's products (`synth.catalog_products`: the demo's category
tree and brands, every name distinct), then `appliance import products FILE` as a subprocess into a fresh data dir
(its peak RSS from the kernel: `wait4`'s ru_maxrss), then the same file again (every line's vector cached: nothing
encoded). Then, in this process, the appliance's `Encoder` alone on the file's first `--sample` lines (one call, on
`server.torch_threads` threads, the model already loaded): the rate the import is held to. The import's stored
vectors of those lines are compared with the encoder's (cosine), so chunking and length-sorting change nothing.
With `--http`, the same products go to a served app by `POST /products` (`catalog.max_bulk` per request) and the
bench waits until `/health/ready` says every one is embedded and indexed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from appliance.config import load_config
from appliance.encoder import Encoder
from appliance.text import product_text
from appliance.types import now_utc
from storage.db import Database, from_blobs
from web.bench.common import REPO, Server, http_json, parse_sizes, size_label, table, write_result
from web.bench.synth import catalog_products
from web.schemas import ProductIn

_DONE = re.compile(r"in ([\d.]+) s")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import-products", parents=[common],
                       help="products/s of `appliance import products` against the encoder alone, peak RSS")
    p.add_argument("--sizes", default="10k,50k", help="catalog sizes (default 10k,50k)")
    p.add_argument("--sample", type=int, default=2000, help="lines the encoder alone encodes (default 2000)")
    p.add_argument("--http", action="store_true", help="also upload each catalog by POST /products to a server")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(run=run)


def _write_products(path: Path, n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    rows = [{"product_id": f"p{p.product_id}", "name": p.name, "merchant": p.merchant,
             "category_path": list(p.category_path), "color": p.color, "price": p.price, "in_stock": p.in_stock,
             "created_at": p.created_at.isoformat() if p.created_at else None}
            for p in catalog_products(rng, ids, rng.integers(0, max(8, n // 100), n), now_utc())]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _import(path: Path, data_dir: Path) -> dict[str, Any]:
    """`appliance import products` in a subprocess: wall seconds, the seconds it reports, peak RSS."""
    env = {**os.environ, "APPLIANCE_SERVER__LOAD_DEMO": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "web.cli", "import", "products", str(path), "--data-dir", str(data_dir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"import failed ({proc.returncode}):\n{output[-2000:]}")
    summary = next(line for line in output.splitlines() if line.startswith("stored "))
    return {"wall_seconds": round(wall, 2), "import_seconds": float(_DONE.search(summary).group(1)),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "summary": summary}


def _stored_vectors(data_dir: Path, ids: list[str]) -> np.ndarray:
    db = Database(data_dir / "appliance.duckdb")
    try:
        rows = dict(db.read(
            """SELECT i.ext, e.vector FROM products p JOIN product_ids i ON p.product_id = i.key
               JOIN embeddings e USING (text_hash) WHERE i.ext IN (SELECT unnest($1::VARCHAR[]))""", [ids]))
    finally:
        db.close()
    return from_blobs([rows[i] for i in ids])


def _upload(rows: list[dict[str, Any]], data_dir: Path, bulk: int) -> dict[str, Any]:
    """POST /products in bulks to a served app, then wait until every product is embedded and indexed."""
    data_dir.mkdir()
    with Server(data_dir) as server:
        peak, t0 = server.rss_mib(), time.perf_counter()
        for start in range(0, len(rows), bulk):
            status, body = http_json("POST", f"{server.base}/products", rows[start:start + bulk], timeout=600)
            if status != 202:
                raise RuntimeError(f"POST /products answered {status}: {body}")
        posted = time.perf_counter() - t0
        while True:
            peak = max(peak, server.rss_mib())
            _, health = http_json("GET", f"{server.base}/health/ready")
            if health["pending_embeddings"] == 0 and health["indexed"] == len(rows):
                break
            time.sleep(0.5)
        seconds = time.perf_counter() - t0
    return {"posted_seconds": round(posted, 2), "indexed_seconds": round(seconds, 2),
            "products_per_s": round(len(rows) / seconds, 1), "peak_rss_mib_sampled": round(peak, 1)}


def run(args: argparse.Namespace, encoder: Encoder | None = None) -> int:
    import torch

    config = load_config(overrides={"server": {"load_demo": False}})
    torch.set_num_threads(config.server.torch_threads)
    encoder = encoder or Encoder(config.encoder.model, config.encoder.dim, config.encoder.batch_size)
    results = []
    with tempfile.TemporaryDirectory(prefix="appliance-product-import-") as tmp:
        for n in parse_sizes(args.sizes):
            folder = Path(tmp) / size_label(n)
            folder.mkdir()
            rows = _write_products(folder / "products.jsonl", n, args.seed)
            print(f"{size_label(n)} products: importing", flush=True)
            first = _import(folder / "products.jsonl", folder / "data")
            again = _import(folder / "products.jsonl", folder / "data")
            sample = rows[:args.sample]
            encoder.load()
            encoder.encode(["warm-up line"] * 32)
            latest = now_utc()  # each line as the import builds it from its row
            lines = [product_text(msgspec.convert(r, ProductIn).to_domain(0, latest), config.catalog.tier_thresholds)
                     for r in sample]
            t0 = time.perf_counter()
            alone = encoder.encode(lines)
            encoder_rate = len(lines) / (time.perf_counter() - t0)
            cosine = np.sum(alone * _stored_vectors(folder / "data", [r["product_id"] for r in sample]), axis=1)
            result = {"products": n, "encoder_products_per_s": round(encoder_rate, 1),
                      "import_products_per_s": round(n / first["import_seconds"], 1), "first": first, "again": again,
                      "cosine_to_encoder_min": float(cosine.min()), "sample": len(lines)}
            if args.http:
                result["http"] = _upload(rows, folder / "http", config.catalog.max_bulk)
            results.append(result)
            print(f"  import {result['import_products_per_s']:,.0f} products/s, encoder alone "
                  f"{encoder_rate:,.0f}/s, peak RSS {first['peak_rss_mib']:,.0f} MiB", flush=True)
    print()
    print(table(f"appliance import products ({torch.get_num_threads()} torch threads)",
                ("products", "import products/s", "encoder alone /s", "ratio", "wall s", "again s", "peak RSS MiB",
                 "cosine min", "POST /products → indexed /s"),
                [(r["products"], r["import_products_per_s"], r["encoder_products_per_s"],
                  f"{r['import_products_per_s'] / r['encoder_products_per_s']:.2f}", r["first"]["wall_seconds"],
                  r["again"]["wall_seconds"], r["first"]["peak_rss_mib"], f"{r['cosine_to_encoder_min']:.6f}",
                  r["http"]["products_per_s"] if "http" in r else "") for r in results]))
    out = write_result("import-products", args, {"model": config.encoder.model, "results": results,
                                                "import_chunk": config.catalog.import_chunk,
                                                "batch_size": config.encoder.batch_size})
    print(f"wrote {out}")
    return 0
