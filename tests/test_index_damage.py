"""A damaged products.hnsw is caught before hnswlib reads it and rebuilt from DuckDB: the app gets ready and its
answers are the undamaged ones (hnswlib itself would segfault, raise OverflowError or serve wrong neighbours)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from storage.hnsw_file import HEADER
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app

DIM = 384


def _app(data: Path, encoder) -> TestClient:
    config = load_config(overrides={"server": {"data_dir": str(data), "load_demo": False}, "jobs": {"enabled": False}})
    return TestClient(create_app(config, encoder=encoder), base_url=LOCAL)


def _similar(client: TestClient) -> dict[int, list[int]]:
    return {pid: [i["product"]["product_id"] for i in client.get(f"/products/{pid}/similar").json()["items"]]
            for pid in range(1, 15)}


@pytest.fixture(scope="module")
def shop(tmp_path_factory, encoder) -> Iterator[tuple[Path, dict]]:
    """A data dir with the small catalog embedded and both indexes saved, and its /similar answers."""
    data = tmp_path_factory.mktemp("shop") / "data"
    with _app(data, encoder) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        client.app.state.services.index.save(whole=True)  # the file itself, not a log of the catalog beside it
        yield data, _similar(client)


def _resign(index: Path) -> None:
    """Make the sidecar agree with a damaged file: only the structural check can catch it then."""
    sidecar = Path(f"{index}.json")
    meta = json.loads(sidecar.read_text())
    meta.update(bytes=index.stat().st_size, sha256=hashlib.sha256(index.read_bytes()).hexdigest())
    sidecar.write_text(json.dumps(meta))


def _level0(raw: bytearray) -> tuple[np.ndarray, int]:
    header = np.frombuffer(bytes(raw[:HEADER.itemsize]), HEADER)[0]
    n, size = int(header["count"]), int(header["size_per_element"])
    return np.frombuffer(raw, np.uint8, n * size, HEADER.itemsize).reshape(n, size), int(header["max_m0"])


def _edit(index: Path, change: Callable[[bytearray], None], resign: bool) -> None:
    raw = bytearray(index.read_bytes())
    change(raw)
    index.write_bytes(bytes(raw))
    if resign:
        _resign(index)


def random_bytes_inside(raw: bytearray) -> None:
    middle = len(raw) // 2
    raw[middle:middle + 64] = np.random.default_rng(1).bytes(64)


def links_out_of_range(raw: bytearray) -> None:
    level0, _ = _level0(raw)
    words = level0[:, :8].copy().view("<u4")
    words[:, 1] = 4_000_000_000  # the first neighbour of every element points far outside the index
    level0[:, :8] = words.view(np.uint8)


def vectors_scaled(raw: bytearray) -> None:
    level0, m0 = _level0(raw)
    start = 4 + 4 * m0
    vectors = level0[::2, start:start + 4 * DIM].copy().view("<f4")
    level0[::2, start:start + 4 * DIM] = (vectors * 0.5).view(np.uint8)  # half the catalog, labels intact


def header_count(raw: bytearray) -> None:
    raw[16:24] = (10**15).to_bytes(8, "little")  # cur_element_count


def all_random(raw: bytearray) -> None:
    raw[:] = np.random.default_rng(2).bytes(len(raw))


def truncated(raw: bytearray) -> None:
    del raw[len(raw) // 2:]


DAMAGE = {
    "index bytes": lambda p: _edit(p, random_bytes_inside, resign=False),
    "links (checksum)": lambda p: _edit(p, links_out_of_range, resign=False),
    "links (structure)": lambda p: _edit(p, links_out_of_range, resign=True),
    "vectors (checksum)": lambda p: _edit(p, vectors_scaled, resign=False),
    "vectors (structure)": lambda p: _edit(p, vectors_scaled, resign=True),
    "header (structure)": lambda p: _edit(p, header_count, resign=True),
    "random file (structure)": lambda p: _edit(p, all_random, resign=True),
    "truncated": lambda p: _edit(p, truncated, resign=False),
    "truncated (structure)": lambda p: _edit(p, truncated, resign=True),
    "missing index": lambda p: p.unlink(),
    "missing sidecar": lambda p: Path(f"{p}.json").unlink(),
    "garbled sidecar": lambda p: Path(f"{p}.json").write_text('{"dim": 384, "sha'),
    "sidecar not an object": lambda p: Path(f"{p}.json").write_text("[1, 2]"),
}


class Warnings(logging.Handler):
    """What the index logger said (the app's logging set-up replaces pytest's capture handler)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings() -> Iterator[Warnings]:
    handler, logger = Warnings(), logging.getLogger("appliance.index")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_index_is_rebuilt_from_duckdb(damage, shop, tmp_path, encoder, warnings):
    original, answers = shop
    data = tmp_path / "data"
    shutil.copytree(original, data)
    DAMAGE[damage](data / "products.hnsw")
    with _app(data, encoder) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.get("/health/ready").json()["indexed"] == 14
        assert _similar(client) == answers  # the first queries neither crash nor differ
    assert [m for m in warnings.messages if m.startswith("products.hnsw is rebuilt from DuckDB: ")]


def test_an_intact_index_is_loaded_not_rebuilt(shop, tmp_path, encoder, warnings):
    original, answers = shop
    shutil.copytree(original, tmp_path / "data")
    with _app(tmp_path / "data", encoder) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert _similar(client) == answers
    assert warnings.messages == []
