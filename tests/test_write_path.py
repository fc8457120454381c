"""The write path's records cost the cyclic collector nothing, and a consumer batch reads its shoppers' histories
once (BENCHMARKS.md, "Feed under load", ninth round): under 500 events/s the middle-generation passes came from
what the write path had in flight (a batch's histories as `Event`s, its messages), and the nearest-products step
read the histories the vectors had just been computed from a second time."""

from __future__ import annotations

import gc

import msgspec
from litestar.testing import TestClient

from appliance.config import Config
from appliance.types import Event, now_utc
from jobs.queue import DurableQueue
from storage.db import Database
from storage.events import EventStore
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app
from web.queued import queued_event
from web.schemas import EventIn


def _tracked() -> int:
    gc.collect()
    return len(gc.get_objects())


def test_events_and_queue_records_are_untracked_and_count_towards_no_collection(db: Database) -> None:
    events = EventStore(db)
    now = now_utc()
    events.append([Event(7, 1 + i % 40, "product_viewed", now) for i in range(400)], now)
    before = _tracked()
    found = events.histories([7], None, 400)  # held, as a consumer batch holds its histories
    grown = _tracked() - before
    history = found[7]
    assert len(history) == 400 and history[0].customer_id == 7
    assert not any(gc.is_tracked(e) for e in history)
    assert grown < 10, f"{grown} tracked objects held for 400 events"  # 402 when each Event was tracked

    queue = DurableQueue(db, visibility_timeout=30, max_receive_count=5)
    queue.send({"customer_id": "c1", "product_id": "p2", "event_name": "product_viewed"})
    received, = queue.receive()
    body = queued_event(received.body, received.sent_at, 60.0)
    assert (body.customer_id, body.product_id, body.event_name) == ("c1", "p2", "product_viewed")
    assert not gc.is_tracked(received) and not gc.is_tracked(body)
    rows = msgspec.json.decode(b'[{"customer_id": "c1", "product_id": 2, "event_name": "product_viewed"}]',
                               type=list[EventIn])  # as POST /events decodes its body
    assert rows[0].product_id == 2 and not gc.is_tracked(rows[0])


def test_a_consumer_batch_reads_its_shoppers_histories_once_for_their_vectors_and_their_feeds(
    config: Config, encoder
) -> None:
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        services = client.app.state.services
        shoppers = [str(200 + i) for i in range(12)]
        first = [{"customer_id": c, "product_id": str(1 + i % 14), "event_name": "product_clicked"}
                 for i, c in enumerate(shoppers)]
        assert client.post("/events", json=first).status_code == 202
        keys = [services.ids.customers.key(c) for c in shoppers]
        wait_until(lambda: all(services.users.cached(k)[1] is not None for k in keys), what="12 vectors")
        assert all(client.get(f"/customers/{c}/feed").json()["personalized"] for c in shoppers)  # they asked

        reads, batches = [], []
        store, updater = services.events, services.updater
        read, recent, update = store.histories, store.recent, updater.update
        store.histories = lambda ids, since, limit: reads.append(list(ids)) or read(ids, since, limit)
        store.recent = lambda ids, since, limit: reads.append(list(ids)) or recent(ids, since, limit)
        updater.update = lambda ids, also=None: batches.append(list(ids)) or update(ids, also)
        before = {k: services.users.cached(k)[1].updated_at for k in keys}
        second = [{"customer_id": c, "product_id": str(1 + (i + 5) % 14), "event_name": "product_viewed"}
                  for i, c in enumerate(shoppers)]
        assert client.post("/events", json=second).status_code == 202
        wait_until(lambda: all(services.users.cached(k)[1].updated_at > before[k] for k in keys), what="new vectors")
        wait_until(lambda: services.queue.stats().in_flight == 0, what="the batch deleted")
        store.histories, store.recent, updater.update = read, recent, update

        assert batches and sorted(k for b in batches for k in b) == sorted(keys)
        assert reads == batches  # one read per batch (histories, newest ids): the nearest-products step reuses it
        personals = [services.feeds.personal(k) for k in keys]
        assert all(services.recommender.knows(p) for p in personals)  # prepared from those histories
        answers = [client.get(f"/customers/{c}/feed").json() for c in shoppers]
        assert all(a["personalized"] and a["items"] for a in answers)
