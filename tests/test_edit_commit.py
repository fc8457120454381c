"""PUT /products/{id}'s writes: edits queued while the writer waits share one transaction, in submission order per
product, each answered with its own stored product; a waiting edit holds no worker thread of the app."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliance.config import Config, load_config
from appliance.encoder import Encoder
from appliance.types import now_utc
from jobs.catalog import CatalogService
from jobs.edits import EditCommit
from jobs.indexing import CatalogIndexer
from storage.catalog import CatalogStore
from storage.db import Database
from storage.vectors import VectorIndex
from tests.browser import serve
from tests.helpers import product, wait_until
from web.app import create_app


@pytest.fixture
def edits(db: Database, encoder: Encoder, tmp_path: Path, config: Config) -> EditCommit:
    store = CatalogStore(db)
    index = VectorIndex(tmp_path / "products.hnsw", config.encoder.dim, config.index)
    indexer = CatalogIndexer(store, encoder, index, config.encoder.background_batch, config.server.torch_threads)
    commit = EditCommit(CatalogService(store, indexer, config.catalog.tier_thresholds))
    yield commit
    commit.close()


def _queued_behind_the_lock(edits: EditCommit, db: Database, first, rest) -> list:
    """Submit `first`, let the writer take it and wait for the writer lock (held here), queue `rest` behind it,
    then release: `rest` is what the writer takes next."""
    with db._write_lock:
        futures = [edits.submit(first, now_utc())]
        wait_until(lambda: not edits._pending, what="the first edit taken")
        futures += [edits.submit(p, now_utc()) for p in rest]
        assert len(edits._pending) == len(rest)
    return [f.result(timeout=120) for f in futures]


def test_edits_queued_meanwhile_share_one_transaction_and_each_gets_its_own_product(
        edits: EditCommit, db: Database) -> None:
    done = _queued_behind_the_lock(edits, db, product(1, "Red mug"),
                                   [product(2, "Blue kettle"), product(3, "Green lamp", price=5.0)])
    assert (edits.commits, edits.edits) == (2, 3)
    assert [d.created for d in done] == [True, True, True]
    assert [(d.stored.product.product_id, d.stored.product.name) for d in done] == [
        (1, "Red mug"), (2, "Blue kettle"), (3, "Green lamp")]
    assert all(d.stored.embedded for d in done)  # embedded before the answer, as a PUT promises
    assert done[2].stored.product.price == 5.0
    again = edits.submit(product(2, "Blue kettle", price=12.0), now_utc()).result(timeout=120)
    assert not again.created and again.stored.product.price == 12.0
    assert db.read("SELECT price FROM products WHERE product_id = 2") == [(12.0,)]


def test_two_edits_of_one_product_are_written_one_after_the_other_and_the_later_wins(
        edits: EditCommit, db: Database) -> None:
    done = _queued_behind_the_lock(edits, db, product(1), [
        product(7, price=1.0), product(8), product(7, price=2.0)])
    assert edits.commits == 3  # [1], then [7 at 1.0, 8], then [7 at 2.0]
    assert [d.created for d in done[1:]] == [True, True, False]  # 7 created by the first of its edits
    assert done[3].stored.product.price == 2.0  # (the first one's answer reads the row back: 1.0 or already 2.0)
    assert db.read("SELECT price FROM products WHERE product_id = 7") == [(2.0,)]


def test_edits_waiting_for_the_writer_lock_hold_no_worker_thread(tmp_path: Path, encoder: Encoder) -> None:
    """Six edits waiting on the writer lock used to hold all six of the loop's default worker threads (2 cores),
    so every other `sync_to_thread` route (here GET /products/{id}) waited with them."""
    config = load_config(overrides={"server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
                                    "jobs": {"enabled": False}})
    app = create_app(config, encoder=encoder)
    with serve(app) as base:
        services = app.state.services
        wait_until(services.ready.is_set, what="ready")

        def put(pid: int, price: float = 3.0) -> int:
            body = json.dumps({"name": f"Mug {pid}", "category_path": ["Home"], "price": price}).encode()
            request = urllib.request.Request(f"{base}/products/{pid}", body, method="PUT",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status

        assert [put(pid) for pid in range(1, 14)] == [201] * 13  # their keys exist: the edits below write no key
        with ThreadPoolExecutor(12) as pool:
            with services.db._write_lock:
                puts = [pool.submit(put, pid, 4.0) for pid in range(2, 14)]
                # the writer takes what has arrived when it wakes (one edit or a few), the rest queue behind it
                wait_until(lambda: len(services.edits._pending) >= 8, what="edits queued")
                with urllib.request.urlopen(f"{base}/products/1", timeout=10) as answer:  # a worker thread's route
                    assert answer.status == 200 and json.loads(answer.read())["product"]["name"] == "Mug 1"
            assert [p.result(timeout=120) for p in puts] == [200] * 12
        assert services.edits.commits <= 13 + 12 - 7  # the 8 or more that queued went in one transaction
        assert services.db.read("SELECT count(*) FROM products WHERE price = 4.0") == [(12,)]
