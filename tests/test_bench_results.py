"""Every benchmark's result file names the command that reproduces it: parsed again, it gives the same arguments."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

from web.bench import add_bench_parser
from web.bench.common import write_result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance")
    add_bench_parser(parser.add_subparsers(required=True))
    return parser


@pytest.mark.parametrize(("argv", "name"), [
    (["window", "movielens", "--config", "my shop.toml"], "window_movielens"),
    (["prior", "retail"], "prior_retail"),
    (["quality", "retail", "--no-als", "--sasrec-loss", "ce"], "quality_retail"),
    (["train", "--datasets", "shop-3k", "--recipes", "after"], "train_shop-3k"),
    (["ingest", "--queue", "sqs", "--batches", "10"], "ingest-sqs"),
    (["ann", "--vectors", "2000"], "ann"),
])
def test_result_command_reproduces_the_arguments(argv: list[str], name: str, tmp_path: Path) -> None:
    parser = _parser()
    args = parser.parse_args(["bench", *argv, "--out", str(tmp_path)])
    path = write_result(name, args, {"figure": 1.5})
    assert path == tmp_path / f"{name}.json"
    body = json.loads(path.read_text())
    assert body["benchmark"] == name and body["figure"] == 1.5
    assert {"date", "python", "duckdb", "torch", "cores"} <= set(body["machine"])
    words = shlex.split(body["command"])
    assert words[:3] == ["appliance", "bench", argv[0]]
    assert vars(parser.parse_args(words[1:])) == vars(args)
    assert not list(tmp_path.glob("*.tmp"))
