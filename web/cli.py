"""The `appliance` command: serve, import, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from appliance.config import Config, load_config
from appliance.demo import generate_demo
from appliance.errors import ApplianceError
from appliance.evaluation import format_table
from appliance.types import Product, now_utc
from jobs.imports import import_events, past_retention
from web.bench import add_bench_parser
from web.ids import created, keyed_events, normalised
from web.importers import read_rows, row_chunks
from web.schemas import EventIn, ProductIn
from web.services import Services, build_services
from web.shop_examples import EXAMPLES, write_uci_retail
from web.startup import load_indexes, load_serving_model
from web.telemetry import configure_logging, quiet_progress_bars


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        configure_logging((_config(args) if hasattr(args, "config") else load_config()).logging)
        return args.run(args)
    except ApplianceError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2


def _config(args: argparse.Namespace) -> Config:
    server = {k: v for k, v in {"data_dir": getattr(args, "data_dir", None), "host": getattr(args, "host", None),
                                "port": getattr(args, "port", None)}.items() if v is not None}
    return load_config(args.config, overrides={"server": server} if server else None)


def _offline_config(args: argparse.Namespace) -> Config:
    """The config of a command that may train outside the server: `training.offline_threads` threads."""
    config = _config(args)
    return replace(config, training=replace(config.training, threads=config.training.offline_threads))


@contextmanager
def _offline(config: Config) -> Iterator[Services]:
    """The parts without the server (which must not be running: DuckDB admits one process), closed after."""
    services = build_services(config)
    try:
        load_indexes(services)  # vectors the updater and training read (an empty index would drop every vector)
        load_serving_model(services)
        yield services
    finally:
        services.close()


def _serve(args: argparse.Namespace) -> int:
    from web.serving import serve

    quiet_progress_bars()
    serve(_config(args))
    return 0


def _import_products(args: argparse.Namespace) -> int:
    config = _config(args)
    path, size = Path(args.file), config.catalog.import_chunk
    latest = now_utc() + timedelta(seconds=config.events.max_future_seconds)
    total = _checked_products(path, size, latest)  # the whole file first: a bad row anywhere stores nothing
    started = time.perf_counter()
    with _offline(config) as services, tqdm(total=total, desc="importing", unit=" products", disable=None) as bar:
        done = services.catalog.import_products(_keyed(services, row_chunks(path, ProductIn, size), latest),
                                                bar.update)
    seconds = time.perf_counter() - started
    print(f"stored {done.products} products: {done.created} new, {done.updated} changed, {done.unchanged} "
          f"unchanged; embedded {done.embedded} lines (the others' vectors were cached) in {seconds:.1f} s "
          f"({done.products / seconds:,.0f} products/s)")
    return 0


def _keyed(
    services: Services, chunks: Iterable[list[tuple[int, ProductIn]]], latest: datetime
) -> Iterator[list[Product]]:
    """Each chunk's products under their keys (the new ids created as the chunk is reached)."""
    for chunk in chunks:
        rows = [row for _, row in chunk]
        keys = created(services.ids.products, [r.product_id for r in rows], "product_id")
        yield [replace(r.to_domain(0, latest), product_id=k) for r, k in zip(rows, keys, strict=True)]


def _checked_products(path: Path, size: int, latest: datetime) -> int:
    """How many products the file holds, every row valid and every product_id once (only the ids are held)."""
    seen: set[str] = set()
    for chunk in row_chunks(path, ProductIn, size):
        for line, row in chunk:
            try:
                row.to_domain(0, latest)
                product_id = normalised([row.product_id], "product_id")[0]
            except ApplianceError as exc:
                raise ApplianceError(f"{path}:{line}: {exc}") from None
            if product_id in seen:
                raise ApplianceError(f"{path}:{line}: product_id {product_id} appears more than once")
            seen.add(product_id)
    return len(seen)


def _import_events(args: argparse.Namespace) -> int:
    config = _config(args)
    rows = read_rows(Path(args.file), EventIn)
    now = now_utc()
    stamps = []
    for line, row in enumerate(rows, start=1):
        try:
            stamps.append(row.ts(now, config.events.max_future_seconds))
        except ApplianceError as exc:
            raise ApplianceError(f"{args.file}: row {line}: {exc}") from None
    late = past_retention(stamps, now, config.jobs.retention_days)
    if late:
        print(f"warning: {late} of these {len(rows)} events are older than jobs.retention_days = "
              f"{config.jobs.retention_days:g}: the next prune deletes them (0 keeps events forever)", file=sys.stderr)
    with _offline(config) as services, tqdm(desc="shoppers' vectors", unit=" shoppers") as bar:
        events = keyed_events(services.ids, rows, stamps)[0]
        bar.total = len({e.customer_id for e in events})
        dated = [bool(row.timestamp) for row in rows]
        done = import_events(events, dated, now, services.events, services.updater, services.recommender, bar.update)
    print(f"stored {done.stored} events ({done.duplicates} duplicates skipped); {done.vectors} of {done.customers} "
          f"shoppers have a personal vector; {done.popular} products have popularity")
    return 0


def _train(args: argparse.Namespace) -> int:
    from jobs.training import load_training_data, split_enough, train_and_decide

    config = _offline_config(args)
    with _offline(config) as services:
        since = _since(args, services)
        data = load_training_data(services.events, services.catalog.store, since)
        split_enough(data, config, "train", since)  # before the progress bar: too little data is one line
        print(f"training on {len(data.interactions)} interactions over {len(data.product_ids)} products")
        with tqdm(desc="training", unit=" batches", disable=None) as bar:
            _, outcome = train_and_decide(
                data, config, services.models, services.serving.get().model,
                progress=lambda e: bar.update(1) if "step" in e else bar.set_postfix(
                    loss=f"{e['loss']:.3f}", val_ndcg=e.get("validation_ndcg")),
                since=since,
            )
    print(format_table(outcome.evaluation))
    print(f"model {outcome.version}: {'promoted' if outcome.promoted else 'rejected'} ({outcome.reason})")
    _write_json(args.out, {"version": outcome.version, "promoted": outcome.promoted, "reason": outcome.reason,
                           "evaluation": outcome.evaluation, "training": outcome.training})
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from jobs.training import evaluate_serving, load_training_data

    config = _config(args)
    with _offline(config) as services:
        data = load_training_data(services.events, services.catalog.store, _since(args, services))
        table = evaluate_serving(data, config, services.serving.get().model)
    print(format_table(table))
    _write_json(args.out, table)
    return 0


def _run_job(args: argparse.Namespace) -> int:
    with _offline(_offline_config(args)) as services:
        run = services.jobs.run(args.name)
    print(f"{run.name}: {run.outcome} in {run.seconds:.1f} s: {run.detail}")
    return {"ok": 0, "skipped": 2}.get(run.outcome, 1)


def _since(args: argparse.Namespace, services: Services) -> datetime | None:
    """--days N: the last N days of data, counted back from the newest event."""
    newest = services.events.newest()
    return newest - timedelta(days=args.days) if args.days and newest else None


def _write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1, default=str))
        print(f"wrote {path}")


def _demo(args: argparse.Namespace) -> int:
    demo = _config(args).demo
    shop = generate_demo(demo.seed, demo.products, demo.customers, demo.days, now_utc())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "products.jsonl").open("w") as f:
        for p in shop.products:
            f.write(json.dumps({
                "product_id": p.product_id, "name": p.name, "merchant": p.merchant,
                "category_path": list(p.category_path), "color": p.color, "price": p.price,
                "in_stock": p.in_stock, "created_at": p.created_at.isoformat() + "Z",
            }) + "\n")
    with (out / "events.jsonl").open("w") as f:
        for e in shop.events:
            f.write(json.dumps({"customer_id": e.customer_id, "product_id": e.product_id,
                                "event_name": e.event_name, "timestamp": e.ts.isoformat() + "Z"}) + "\n")
    tastes = {str(c): {"categories": [list(p) for p in t.categories], "colors": list(t.colors), "tier": t.tier}
              for c, t in shop.tastes.items()}
    (out / "tastes.json").write_text(json.dumps(tastes, indent=1))
    planted = {"partners": {str(a): str(b) for a, b in shop.partners.items()}, "burst": [str(p) for p in shop.burst]}
    (out / "planted.json").write_text(json.dumps(planted, indent=1))
    print(f"wrote {len(shop.products)} products, {len(shop.events)} events, "
          f"{len(tastes)} hidden tastes and the planted pairs and burst to {out}/")
    return 0


def _example(args: argparse.Namespace) -> int:
    products, events = write_uci_retail(Path(args.src), Path(args.out))
    print(f"wrote {products} products and {events} purchases to {args.out}/products.csv and events.csv")
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="a TOML file overriding the shipped config.toml")
    common.add_argument("--data-dir", help="where appliance.duckdb and the indexes live (server.data_dir)")
    parser = argparse.ArgumentParser(prog="appliance", description="A self-hosted recommendation server.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", parents=[common], help="serve the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=_serve)
    imp = sub.add_parser("import", help="load products or events from a CSV or JSON Lines file")
    what = imp.add_subparsers(required=True, metavar="WHAT")
    for name, run in (("products", _import_products), ("events", _import_events)):
        cmd = what.add_parser(name, parents=[common], help=f"import {name} (the server must not be running)")
        cmd.add_argument("file")
        cmd.set_defaults(run=run)
    for name, run, text in (("train", _train, "train a user tower, evaluate it, promote it only if better"),
                            ("evaluate", _evaluate, "evaluate the serving model and the baselines")):
        cmd = sub.add_parser(name, parents=[common], help=f"{text} (the server must not be running)")
        cmd.add_argument("--days", type=float, help="only the last DAYS days of data, back from the newest event")
        cmd.add_argument("--out", help="also write the results as JSON to this file")
        cmd.set_defaults(run=run)
    jobs = sub.add_parser("jobs", help="run a scheduled job now")
    jobs_sub = jobs.add_subparsers(required=True, metavar="ACTION")
    run_job = jobs_sub.add_parser("run", parents=[common], help="run one job (the server must not be running)")
    run_job.add_argument("name", choices=["retrain", "prune", "popularity", "reindex", "sync"])
    run_job.set_defaults(run=_run_job)
    demo = sub.add_parser("demo", parents=[common], help="write the demo shop as JSON Lines files")
    demo.add_argument("out", nargs="?", default="demo", help="output folder (default: demo)")
    demo.set_defaults(run=_demo)
    example = sub.add_parser("example", help="turn a public data set into import files (products.csv, events.csv)")
    example.add_argument("name", choices=EXAMPLES)
    example.add_argument("src", help="the data set's file (uci-retail: the Online Retail CSV)")
    example.add_argument("out", help="output folder")
    example.set_defaults(run=_example)
    add_bench_parser(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
