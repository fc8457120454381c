"""`appliance bench import-products`: a bulk catalog import end to end against the encoder's own rate, and its RSS.

For each size: a JSON Lines file of the synthetic shop's products (`synth.catalog_products`: the demo's category
tree and brands, every name distinct). The appliance's `Encoder` alone on the file's first `--sample` lines (one
call, on `server.torch_threads` threads, the model already loaded), just before and just after the imports: their
mean is the rate the import is held to (the machine is shared). Then `appliance import products FILE` as a
subprocess into a fresh data dir (its peak RSS from the kernel: `wait4`'s ru_maxrss), then the same file again
(every line's vector cached: nothing encoded); `--no-cli` leaves both out. With `--http`, the same products go to a
served app by `POST /products` (`catalog.max_bulk` per request) and the bench waits until `/health/ready` says every
one is embedded and indexed: the server's peak RSS (`VmHWM`), its CPU seconds, and the latency of `/health/live`,
a feed and a `PUT /products/{id}` of one product while it embeds, against the same probe on the idle server first.
The stored vectors of the sampled lines are compared with the encoder's (cosine) for each path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
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
from web.bench.common import REPO, Server, http_json, parse_sizes, percentiles, size_label, table, write_result
from web.bench.synth import catalog_products
from web.schemas import ProductIn

_DONE = re.compile(r"in ([\d.]+) s")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import-products", parents=[common],
                       help="products/s of `appliance import products` against the encoder alone, peak RSS")
    p.add_argument("--sizes", default="10k,50k", help="catalog sizes (default 10k,50k)")
    p.add_argument("--sample", type=int, default=2000, help="lines the encoder alone encodes (default 2000)")
    p.add_argument("--http", action="store_true", help="also upload each catalog by POST /products to a server")
    p.add_argument("--no-cli", action="store_true", help="leave out `appliance import products` (with --http)")
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


PROBE_PRODUCT = "probe-product"


class _Probe(threading.Thread):
    """Asks each route in turn every `interval` s while the upload runs: what a shopper waits meanwhile, and a
    merchant's `PUT /products/{id}` of one product with a new name (its line encoded before the answer)."""

    ROUTES = ("GET /health/live", "GET /customers/probe-shopper/feed", f"PUT /products/{PROBE_PRODUCT}")

    def __init__(self, base: str, interval: float = 0.2) -> None:
        super().__init__(name="import-probe", daemon=True)
        self.base, self.interval = base, interval
        self.samples: dict[str, list[float]] = {route: [] for route in self.ROUTES}
        self.done = threading.Event()

    def run(self) -> None:
        rounds = 0
        while not self.done.is_set():
            for route in self.ROUTES if rounds % 5 == 0 else self.ROUTES[:2]:  # a PUT in the first and every fifth
                method, path = route.split(" ")
                body = {"name": f"Probe lamp model {time.monotonic_ns()}", "price": 20.0} if method == "PUT" else None
                t0 = time.perf_counter()
                status, _ = http_json(method, f"{self.base}{path}", body, timeout=120)
                if status not in (200, 201):
                    raise RuntimeError(f"{route} answered {status} during the upload")
                self.samples[route].append((time.perf_counter() - t0) * 1000)
            rounds += 1
            self.done.wait(self.interval)

    def stop(self) -> dict[str, dict[str, float]]:
        self.done.set()
        self.join()
        return {route: percentiles(ms) for route, ms in self.samples.items()}


def _probed(base: str, seconds: float) -> dict[str, dict[str, float]]:
    probe = _Probe(base)
    probe.start()
    time.sleep(seconds)
    return probe.stop()


def _upload(rows: list[dict[str, Any]], data_dir: Path, bulk: int) -> dict[str, Any]:
    """POST /products in bulks to a served app, then wait until every product is embedded and indexed; the latency
    of /health/live and of a feed meanwhile, against the same probe on the idle server just before."""
    data_dir.mkdir()
    with Server(data_dir) as server:
        idle = _probed(server.base, 10.0)
        probe = _Probe(server.base)
        probe.start()
        cpu, t0 = server.cpu_seconds(), time.perf_counter()
        for start in range(0, len(rows), bulk):
            status, body = http_json("POST", f"{server.base}/products", rows[start:start + bulk], timeout=600)
            if status != 202:
                raise RuntimeError(f"POST /products answered {status}: {body}")
        posted = time.perf_counter() - t0
        rss = {"posted": server.rss_mib(), "embedding": 0.0, "indexing": 0.0}  # VmRSS sampled in each stage
        while True:
            _, health = http_json("GET", f"{server.base}/health/ready", timeout=60)
            # every row and the probe's product embedded and indexed
            if health["pending_embeddings"] == 0 and health["indexed"] == health["products"] == len(rows) + 1:
                break
            stage = "embedding" if health["pending_embeddings"] else "indexing"
            rss[stage] = max(rss[stage], server.rss_mib())
            time.sleep(0.5)
        seconds = time.perf_counter() - t0
        busy = probe.stop()
        cpu = server.cpu_seconds() - cpu
        peak = server.rss_mib("VmHWM")
    return {"posted_seconds": round(posted, 2), "indexed_seconds": round(seconds, 2),
            "products_per_s": round(len(rows) / seconds, 1), "server_cpu_seconds": round(cpu, 1),
            "peak_rss_mib": round(peak, 1), "rss_mib_sampled": {k: round(v, 1) for k, v in rss.items()},
            "latency_ms_idle": idle, "latency_ms_during": busy}


def _encoder_alone(encoder: Encoder, rows: list[dict[str, Any]], thresholds: Any) -> tuple[float, np.ndarray]:
    """products/s of the appliance's Encoder on these rows' lines, as the import builds them, in one call."""
    latest = now_utc()
    lines = [product_text(msgspec.convert(r, ProductIn).to_domain(0, latest), thresholds) for r in rows]
    t0 = time.perf_counter()
    vectors = encoder.encode(lines)
    return len(lines) / (time.perf_counter() - t0), vectors


def run(args: argparse.Namespace, encoder: Encoder | None = None) -> int:
    import torch

    config = load_config(overrides={"server": {"load_demo": False}})
    torch.set_num_threads(config.server.torch_threads)
    encoder = encoder or Encoder(config.encoder.model, config.encoder.dim, config.encoder.batch_size)
    encoder.load()
    encoder.encode(["warm-up line"] * 32)
    results = []
    with tempfile.TemporaryDirectory(prefix="appliance-product-import-") as tmp:
        for n in parse_sizes(args.sizes):
            folder = Path(tmp) / size_label(n)
            folder.mkdir()
            rows = _write_products(folder / "products.jsonl", n, args.seed)
            sample = rows[:args.sample]
            before, alone = _encoder_alone(encoder, sample, config.catalog.tier_thresholds)
            result: dict[str, Any] = {"products": n, "sample": len(sample)}
            if not args.no_cli:
                print(f"{size_label(n)} products: appliance import products", flush=True)
                result["first"] = _import(folder / "products.jsonl", folder / "data")
                result["again"] = _import(folder / "products.jsonl", folder / "data")
                result["import_products_per_s"] = round(n / result["first"]["import_seconds"], 1)
            if args.http:
                print(f"{size_label(n)} products: POST /products", flush=True)
                result["http"] = _upload(rows, folder / "http", config.catalog.max_bulk)
            after, _ = _encoder_alone(encoder, sample, config.catalog.tier_thresholds)
            # the rate the import is held to: the encoder alone just before and just after it (the machine is shared)
            result["encoder_products_per_s"] = round((before + after) / 2, 1)
            result["encoder_products_per_s_before_after"] = [round(before, 1), round(after, 1)]
            ids = [r["product_id"] for r in sample]
            for key, data in (("cli", folder / "data"), ("http", folder / "http")):
                if data.exists():
                    cosine = np.sum(alone * _stored_vectors(data, ids), axis=1)
                    result[f"cosine_to_encoder_min_{key}"] = float(cosine.min())
            results.append(result)
            print(f"  encoder alone {result['encoder_products_per_s']:,.0f} products/s", flush=True)
    _print(results, torch.get_num_threads())
    out = write_result("import-products", args, {"model": config.encoder.model, "results": results,
                                                "import_chunk": config.catalog.import_chunk,
                                                "background_batch": config.encoder.background_batch,
                                                "batch_size": config.encoder.batch_size})
    print(f"wrote {out}")
    return 0


def _print(results: list[dict[str, Any]], threads: int) -> None:
    rows = []
    for r in results:
        rate = r["encoder_products_per_s"]
        if "first" in r:
            rows.append((r["products"], "cli", r["import_products_per_s"], rate,
                         f"{r['import_products_per_s'] / rate:.2f}", r["first"]["wall_seconds"],
                         r["first"]["peak_rss_mib"], f"{r['cosine_to_encoder_min_cli']:.6f}", "", ""))
        if "http" in r:
            h = r["http"]
            live, put = (h["latency_ms_during"][route] for route in (_Probe.ROUTES[0], _Probe.ROUTES[2]))
            rows.append((r["products"], "http", h["products_per_s"], rate, f"{h['products_per_s'] / rate:.2f}",
                         h["indexed_seconds"], h["peak_rss_mib"], f"{r['cosine_to_encoder_min_http']:.6f}",
                         f"{live['p50']:.1f} / {live['p99']:.1f} / {live['max']:.1f}",
                         f"{put['p50']:.0f} / {put['max']:.0f}"))
    print()
    print(table(f"bulk product import ({threads} torch threads; the encoder alone: mean of just before and after)",
                ("products", "path", "products/s", "encoder alone /s", "ratio", "wall s", "peak RSS MiB",
                 "cosine min", "/health/live p50/p99/max ms meanwhile", "PUT one p50/max ms"), rows))
