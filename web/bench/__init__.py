"""`appliance bench NAME`: the benchmarks (feed, serve, loop, ann, ingest, import, import-products, memory, encoding,
impressions, access, widgets, quality, prior, window, train, save, compact).

Each prints a table and writes `bench/results/NAME.json` (or `--out DIR`) with the machine's facts and the
command. Synthetic shops are built into `--work-dir` (kept and reused) or a temp dir. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_bench_parser(subparsers: Any) -> None:
    """Register `bench` and its sub-benchmarks on the CLI's subparsers."""
    from web.bench import (
        access,
        ann,
        compact,
        encoding,
        feed,
        imports,
        impressions,
        ingest,
        loop,
        memory,
        prior,
        product_import,
        save,
        serve,
        train,
        widgets,
        window,
    )
    from web.bench.common import DEFAULT_OUT
    from web.bench.quality import add_quality_parser

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default=str(DEFAULT_OUT), help="folder for NAME.json (default bench/results)")
    common.add_argument("--work-dir", help="folder for generated shops, kept and reused (default: a temp dir)")
    bench = subparsers.add_parser("bench", help="run a benchmark")
    which = bench.add_subparsers(required=True, metavar="NAME")
    for module in (feed, serve, loop, ann, ingest, imports, product_import, memory, encoding, impressions, access,
                   widgets, prior, window, train, save, compact):
        module.add_parser(which, common)
    add_quality_parser(which, common)
    for name, parser in which.choices.items():
        parser.set_defaults(bench=name)  # write_result's command line names it
