"""A consumer batch saves its shoppers' vectors and deletes its messages in one DuckDB transaction (BENCHMARKS.md,
"Feed under load", twelfth round): a fault or a crash before that commit leaves neither, the messages come back and
the vectors are computed from them again (at least once). Real DuckDB files, the real encoder and hnswlib."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from litestar.testing import TestClient

from appliance.config import Config, load_config
from storage.db import Database
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app

SHOPPER = "300"  # a new shopper: no vector before the batch


def _shop_with_a_queued_event(client: TestClient) -> int:
    """The small catalog embedded, the consumer stopped, one event of SHOPPER queued; SHOPPER's key."""
    wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
    assert client.post("/products", json=small_catalog()).status_code == 202
    wait_embedded(client)
    services = client.app.state.services
    services.consumer.stop()  # the batch below is driven by hand
    event = {"customer_id": SHOPPER, "product_id": "2", "event_name": "product_clicked"}
    assert client.post("/events", json=[event]).status_code == 202
    return services.ids.customers.key(SHOPPER)


def _stored(db: Database, key: int) -> tuple[int, int]:
    """(vectors of the shopper, live messages) as DuckDB holds them."""
    vectors = db.read("SELECT count(*) FROM user_vectors WHERE customer_id = ?", [key])[0][0]
    messages = db.read("SELECT count(*) FROM queue_messages WHERE dead_at IS NULL")[0][0]
    return vectors, messages


def test_a_fault_between_the_delete_and_the_commit_leaves_neither_and_the_redelivery_saves_both(
    config: Config, encoder
) -> None:
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        key = _shop_with_a_queued_event(client)
        services = client.app.state.services
        queue, real = services.queue, services.queue.delete_batch_in
        holds = []

        def faulty(cur, handles):  # the delete ran inside the transaction; the commit never comes
            holds.append(real(cur, handles))
            raise RuntimeError("fault after the delete, before the commit")

        queue.delete_batch_in = faulty
        try:
            services.consumer.run_once()
        except RuntimeError as exc:
            assert "before the commit" in str(exc)
        else:
            raise AssertionError("the fault did not reach the consumer")
        finally:
            queue.delete_batch_in = real
        assert holds  # the delete was inside the vectors' transaction
        assert _stored(services.db, key) == (0, 1)  # no vector for a message still queued
        assert services.users.get(key) is None  # nor in the cache in front of the table
        assert queue.stats().in_flight == 1

        assert queue.release_in_flight() == 1  # as after its visibility timeout
        assert services.consumer.run_once() == 1
        assert _stored(services.db, key) == (1, 0)
        assert services.users.get(key) is not None


CRASH = """
import os, sys
from appliance.config import load_config
from web.services import build_services
from web.startup import load_indexes

services = build_services(load_config(overrides={"server": {"data_dir": sys.argv[1], "load_demo": False}}))
load_indexes(services)
real = services.queue.delete_batch_in

def crash(cur, handles):
    real(cur, handles)
    os._exit(9)  # killed inside the transaction: vector written, messages deleted, nothing committed

services.queue.delete_batch_in = crash
services.consumer.run_once()
sys.exit(3)  # not reached: the batch had a vector to save
"""


def test_a_process_killed_inside_the_batch_transaction_redelivers_the_event_and_saves_its_vector_after_restart(
    config: Config, encoder
) -> None:
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        key = _shop_with_a_queued_event(client)
    data = Path(config.server.data_dir)
    crashed = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH), str(data)], capture_output=True,
                             text=True, timeout=600, check=False)
    assert crashed.returncode == 9, crashed.stderr[-2000:]
    db = Database(data / "appliance.duckdb")
    try:
        assert _stored(db, key) == (0, 1)  # the WAL replayed: neither the vector nor the delete survived
    finally:
        db.close()

    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        services = client.app.state.services
        wait_until(lambda: _stored(services.db, key) == (1, 0), timeout=120, what="the redelivered batch")
        newest, = services.db.read("SELECT max(ts) FROM events WHERE customer_id = ?", [key])[0]
        assert services.users.get(key).last_event_at == newest  # computed from the event that was redelivered


def test_a_batch_is_received_with_the_save_of_the_one_before_and_a_stop_gives_it_back(tmp_path: Path, encoder) -> None:
    """One hold of the writer lock for a batch's save, its delete and the next batch's receive (BENCHMARKS.md "Feed
    under load", seventeenth round); a consumer stopped with a batch received ahead makes it visible again."""
    config = load_config(overrides={"server": {"data_dir": str(tmp_path), "load_demo": False},
                                    "realtime": {"consumer_batch": 2}})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        services = client.app.state.services
        services.consumer.stop()  # driven by hand below
        shoppers = ["401", "402", "403", "404", "405"]
        events = [{"customer_id": c, "product_id": str(2 + i), "event_name": "product_clicked"}
                  for i, c in enumerate(shoppers)]
        assert client.post("/events", json=events).status_code == 202
        queue, consumer = services.queue, services.consumer
        receives, receive = [], queue.receive
        queue.receive = lambda *a, **kw: receives.append(1) or receive(*a, **kw)
        try:
            assert consumer.run_once() == 2  # 401, 402 processed; 403, 404 received in the same transaction
            assert (queue.stats().in_flight, queue.stats().depth) == (2, 1)
            assert consumer.run_once() == 2  # the batch in hand: no receive of its own
            assert len(receives) == 1
            assert (queue.stats().in_flight, queue.stats().depth) == (1, 0)  # 405 ahead
        finally:
            queue.receive = receive
        keys = [services.ids.customers.key(c) for c in shoppers]
        assert [services.users.get(k) is not None for k in keys] == [True, True, True, True, False]
        consumer.stop()
        assert (queue.stats().in_flight, queue.stats().depth) == (0, 1)  # 405 visible again, not lost
        assert consumer.run_once() == 1
        assert services.users.get(keys[4]) is not None and queue.stats().depth == 0
