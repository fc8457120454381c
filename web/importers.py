"""Reading import files (CSV or JSON Lines) into wire types, with the line number of any bad row.

Columns (CSV header names = JSON keys):
  products: product_id, name, merchant, category_path, color, price, in_stock, created_at
            (in CSV, category_path is "Shoes > Sneakers > Running"; in JSON Lines, a list of strings)
  events:   customer_id, product_id, event_name, timestamp (optional, ISO 8601; default: import time), event_id
            (optional: stored once per id)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from tqdm import tqdm

from appliance.errors import InvalidInput

T = TypeVar("T", bound=msgspec.Struct)
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def read_rows(path: Path, kind: type[T]) -> list[T]:
    """Every row of the file decoded as `kind`; the first bad row raises InvalidInput naming its line."""
    rows = tqdm(_raw_rows(path), desc=f"reading {path.name}", unit=" rows", leave=False, disable=None)
    return [row for _, row in _decoded(path, kind, rows)]


def row_chunks(path: Path, kind: type[T], size: int) -> Iterator[list[tuple[int, T]]]:
    """The file's rows decoded as `kind` with their line numbers, `size` at a time (only one chunk is held);
    a bad row raises InvalidInput naming its line when its chunk is read."""
    rows = _decoded(path, kind, _raw_rows(path))
    while chunk := list(islice(rows, size)):
        yield chunk


def _raw_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file", field="file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_rows(path)
    raise InvalidInput(f"{path}: unknown format {suffix!r} (use .csv or .jsonl)", field="file")


def _decoded(path: Path, kind: type[T], rows: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, T]]:
    for line, row in rows:
        try:
            yield line, msgspec.convert(row, kind, strict=False)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"{path}:{line}: {exc}", field=f"line {line}") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            line = reader.line_num
            if None in row:
                raise InvalidInput(f"{path}:{line}: more values than header columns", field=f"line {line}")
            clean: dict[str, Any] = {k: v for k, v in row.items() if v not in ("", None)}
            if "category_path" in clean:
                clean["category_path"] = [c.strip() for c in clean["category_path"].split(">") if c.strip()]
            if "in_stock" in clean:
                flag = _BOOLS.get(clean["in_stock"].strip().lower())
                if flag is None:
                    raise InvalidInput(f"{path}:{line}: in_stock must be true or false", field=f"line {line}")
                clean["in_stock"] = flag
            yield line, clean


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{line}: not valid JSON ({exc.msg})", field=f"line {line}") from None
            if not isinstance(row, dict):
                raise InvalidInput(f"{path}:{line}: each line must be a JSON object", field=f"line {line}")
            yield line, row
