"""The `appliance` command: serve, import, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from appliance.config import Config, load_config
from appliance.demo import generate_demo
from appliance.errors import ApplianceError
from appliance.types import now_utc
from web.importers import read_rows
from web.schemas import EventIn, ProductIn
from web.services import build_services


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except ApplianceError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2


def _config(args: argparse.Namespace) -> Config:
    server = {k: v for k, v in {"data_dir": args.data_dir, "host": getattr(args, "host", None),
                                "port": getattr(args, "port", None)}.items() if v is not None}
    return load_config(args.config, overrides={"server": server} if server else None)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from web.app import create_app

    config = _config(args)
    uvicorn.run(create_app(config), host=config.server.host, port=config.server.port, log_level="info")
    return 0


def _import_products(args: argparse.Namespace) -> int:
    config = _config(args)
    rows = read_rows(Path(args.file), ProductIn)
    ids = [r.product_id for r in rows]
    if len(set(ids)) != len(ids):
        raise ApplianceError(f"{args.file}: a product_id appears more than once")
    services = build_services(config)
    try:
        result = services.catalog.upsert([r.to_product() for r in rows], now_utc(), embed_now=False)
        print(f"stored {len(rows)} products: {result.created} new, {result.updated} changed, "
              f"{result.unchanged} unchanged; embedding {result.to_embed} lines")
        with tqdm(total=result.to_embed, desc="embedding", unit=" products") as bar:
            services.indexer.embed_pending(progress=bar.update)
        services.indexer.reconcile()
    finally:
        services.close()
    return 0


def _import_events(args: argparse.Namespace) -> int:
    config = _config(args)
    rows = read_rows(Path(args.file), EventIn)
    now = now_utc()
    events = []
    for line, row in enumerate(rows, start=1):
        try:
            events.append(row.to_domain(now, config.events.max_future_seconds))
        except ApplianceError as exc:
            raise ApplianceError(f"{args.file}: row {line}: {exc}") from None
    services = build_services(config)
    try:
        services.events.append(events, now)
    finally:
        services.close()
    print(f"stored {len(events)} events")
    return 0


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
    print(f"wrote {len(shop.products)} products, {len(shop.events)} events and "
          f"{len(tastes)} hidden tastes to {out}/")
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
    demo = sub.add_parser("demo", parents=[common], help="write the demo shop as JSON Lines files")
    demo.add_argument("out", nargs="?", default="demo", help="output folder (default: demo)")
    demo.set_defaults(run=_demo)
    return parser


if __name__ == "__main__":
    sys.exit(main())
