"""Erasure wins against work in flight: as a use case (no HTTP) and over HTTP with the real consumer running."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.types import Event, now_utc
from jobs.attribution import ImpressionLog
from jobs.erasure import CustomerEraser
from jobs.indexing import IndexMirror
from jobs.queue import DurableQueue
from jobs.realtime import ServingModel, UserVectorUpdater
from jobs.recent import RecentViews
from storage.baskets import BasketStore
from storage.elastic_outbox import NoopElasticSync
from storage.events import EventStore
from storage.ids import IdMap
from storage.impressions import ImpressionStore
from storage.users import UserStore
from storage.vectors import VectorIndex
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app

DIM = 8


class ErasedWhileReading(EventStore):
    """The real store; erases the shopper right after their history was read (the race, made certain)."""

    eraser: CustomerEraser | None = None

    def recent(self, customer_ids: Sequence[int], since, limit):
        out = super().recent(customer_ids, since, limit)
        if self.eraser:
            for cid in customer_ids:
                self.eraser.erase(str(cid))
        return out


def parts(db, tmp_path):
    config = load_config()
    events = ErasedWhileReading(db)
    users = UserStore(db)
    products = VectorIndex(tmp_path / "p.hnsw", DIM, config.index)
    products.upsert(np.arange(1, 6), np.random.default_rng(0).normal(size=(5, DIM)).astype(np.float32))
    mirror = IndexMirror(VectorIndex(tmp_path / "u.hnsw", DIM, config.index), users.vector_pages, users.vector_ids)
    queue = DurableQueue(db, visibility_timeout=30, max_receive_count=5)
    updater = UserVectorUpdater(
        events, users, mirror, products, ServingModel(), config.tower, config.events.weights, 48.0, now_utc)
    customers = IdMap(db, "customer")
    customers.keys([str(c) for c in range(1, 10)], create=True)  # shop id "7" is key 7 here
    impressions = ImpressionLog(ImpressionStore(db), config.analytics, now_utc, lambda ids: customers.keys(ids))
    recent = RecentViews(BasketStore(db), 50, 1000, 30.0, now_utc)
    eraser = CustomerEraser(db, customers, events, queue, users, mirror, NoopElasticSync(), impressions, recent)
    return events, users, mirror, updater, eraser


def test_erase_removes_every_trace_in_one_use_case(db, tmp_path):
    events, users, mirror, updater, eraser = parts(db, tmp_path)
    now = now_utc()
    events.append([Event(7, 1 + i % 5, "product_purchased", now - timedelta(minutes=i)) for i in range(4)], now)
    events.append([Event(8, 2, "product_clicked", now)], now)
    assert updater.update([7, 8]) == {7: "mean", 8: "mean"}
    mirror.sync()
    assert users.get(7) is not None and 7 in mirror.index.ids()

    erased = eraser.erase("7")

    assert (erased.events, erased.vectors) == (4, 1)
    assert users.get(7) is None and UserStore(db).get(7) is None  # cache and DuckDB agree
    assert 7 not in mirror.index.ids() and mirror.sync() == 0  # the index does not take it back either
    assert events.purchased(7) == set() and db.read("SELECT count(*) FROM events WHERE customer_id = 7")[0][0] == 0
    assert users.get(8) is not None  # the other shopper is untouched
    assert eraser.customers.key("7") is None and eraser.erase("7").events == 0  # the id is forgotten too


def test_a_vector_computed_from_erased_history_is_not_saved(db, tmp_path):
    events, users, mirror, updater, eraser = parts(db, tmp_path)
    now = now_utc()
    events.append([Event(c, 1 + i, "product_clicked", now) for c in (3, 4) for i in range(3)], now)
    events.eraser = eraser  # both shoppers are erased between their history read and the vector save

    assert updater.update([3, 4]) == {3: "none", 4: "none"}
    assert users.get(3) is None and users.get(4) is None and users.count() == 0

    events.eraser = None  # a shopper who comes back after the erasure is a new shopper: served again
    (key,) = eraser.customers.keys(["3"], create=True)
    events.append([Event(key, 2, "product_clicked", now)], now)
    assert updater.update([key]) == {key: "mean"}


def test_erasure_sticks_against_the_running_consumer_over_http(tmp_path, encoder):
    """>= 100 rounds of: 10 events, then erase at once, while the consumer works on those events."""
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False}, "jobs": {"enabled": False},
        "realtime": {"receive_wait_seconds": 0.01, "consumer_batch": 4, "user_index_sync_seconds": 0.0},
    })
    rounds = 120
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        kept = 10_000  # a shopper who is never erased: proves the consumer does produce vectors meanwhile
        for cid in range(1, rounds + 1):
            for k in range(10):
                event = {"customer_id": cid, "product_id": (cid + k) % 14 + 1, "event_name": "product_clicked"}
                assert client.post("/events", json=event).status_code == 202
            assert client.post("/events", json={**event, "customer_id": kept}).status_code == 202
            erased = client.delete(f"/customers/{cid}")
            assert erased.status_code == 200 and erased.json()["events"] == 10
        wait_until(lambda: (q := client.get("/queue").json())["depth"] == 0 and q["in_flight"] == 0,
                   what="queue drained")
        services = client.app.state.services
        services.user_mirror.sync()
        back = [cid for cid in range(1, rounds + 1) if client.get(f"/customers/{cid}/feed").json()["personalized"]]
        assert back == []
        key = services.ids.customers.key(str(kept))
        assert services.users.count() == 1 and UserStore(services.db).get(key) is not None
        assert set(services.user_mirror.index.ids().tolist()) == {key}
        assert client.get(f"/customers/{kept}/feed").json()["personalized"]


class MergedWhileReading(EventStore):
    """The real store; moves the shopper's events to another right after their history was read (a merge)."""

    def recent(self, customer_ids: Sequence[int], since, limit):
        out = super().recent(customer_ids, since, limit)
        with self.db.write() as cur:
            self.move_in(cur, customer_ids[0], 9)
        return out


def test_a_vector_computed_before_a_merge_is_not_saved_for_the_merged_away_id(db, tmp_path):
    _, users, mirror, updater, _ = parts(db, tmp_path)
    events = updater.events = MergedWhileReading(db)
    now = now_utc()
    events.append([Event(3, 1 + i, "product_clicked", now) for i in range(3)], now)

    assert updater.update([3]) == {3: "none"}  # its events are customer 9's now
    assert users.get(3) is None
    assert updater.update([9]) == {9: "mean"}
