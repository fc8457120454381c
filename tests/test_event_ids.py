"""Client event ids: a retried POST /events stores its events once; events without an id are stored as sent."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
from litestar.testing import TestClient

from appliance.types import Event, now_utc
from jobs import upkeep
from storage.db import Database
from storage.events import EventStore
from storage.migrations import MIGRATIONS

CLICK = {"customer_id": "anon-7f3a", "product_id": "85123A", "event_name": "product_clicked"}
T0 = datetime(2026, 5, 1, 12)


def _stored(client: TestClient) -> tuple[int, int]:
    """(events, queued messages) on disk."""
    db = client.app.state.services.db
    return db.read("SELECT count(*) FROM events")[0][0], db.read("SELECT count(*) FROM queue_messages")[0][0]


def test_a_retry_of_an_acknowledged_post_stores_nothing_and_gets_the_same_ids(client: TestClient) -> None:
    first = client.post("/events", json={**CLICK, "event_id": "9b2c7d2e-6f1c-4d55-b3b8-2f0a0a7e5c11"})
    assert first.status_code == 202, first.text
    assert first.json()["duplicates"] == 0
    stored = _stored(client)
    again = client.post("/events", json={**CLICK, "event_id": "9b2c7d2e-6f1c-4d55-b3b8-2f0a0a7e5c11"})
    assert again.status_code == 202, again.text
    assert again.json() == {**first.json(), "duplicates": 1}  # the stored event's id, nothing new
    assert _stored(client) == stored  # neither the event nor its queue message twice
    metrics = client.get("/metrics").text
    assert 'appliance_events_ingested_total{event_name="product_clicked"} 1.0' in metrics


def test_a_batch_retried_with_more_events_stores_only_the_new_ones(client: TestClient) -> None:
    batch = [{**CLICK, "product_id": str(p), "event_id": f"order-1-line-{p}"} for p in (1, 2, 3)]
    first = client.post("/events", json=batch).json()
    retry = client.post("/events", json=[*batch, {**CLICK, "product_id": "4", "event_id": "order-1-line-4"}]).json()
    assert retry["accepted"] == 4 and retry["duplicates"] == 3
    assert retry["event_ids"][:3] == first["event_ids"] and retry["event_ids"][3] not in first["event_ids"]
    assert _stored(client) == (4, 4)
    # an id twice in one batch: stored once, both answered with its id
    twice = client.post("/events", json=[{**CLICK, "event_id": "x-1"}, {**CLICK, "event_id": "x-1"}]).json()
    assert twice["duplicates"] == 1 and twice["event_ids"][0] == twice["event_ids"][1]
    assert _stored(client) == (5, 5)


def test_events_without_an_id_are_stored_every_time_they_are_sent(client: TestClient) -> None:
    for _ in range(2):
        assert client.post("/events", json=[CLICK, CLICK]).json()["duplicates"] == 0
    assert _stored(client) == (4, 4)


def test_a_bad_event_id_is_a_problem_naming_the_field_and_writes_nothing(client: TestClient) -> None:
    for bad, field in ((7, "event_id"), ("", "event_id"), ("has space", "event_id"), ("x" * 129, "event_id"),
                       ("ünïcode", "event_id"), ("line\n", "event_id"), (None, None)):
        body = [CLICK, {**CLICK, "event_id": bad}]
        answer = client.post("/events", json=body)
        if field is None:  # null is the same as no id
            assert answer.status_code == 202
            continue
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["field"] == f"[1].{field}", answer.json()
    assert _stored(client) == (2, 2)  # only the null-id request


def test_the_openapi_document_describes_event_id(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()["components"]["schemas"]
    event_id = schema["EventIn"]["properties"]["event_id"]
    text = str(event_id)
    assert "128" in text and "dedupe_window_hours" in text
    assert "duplicates" in schema["EventsAccepted"]["properties"]


def test_the_prune_job_forgets_ids_older_than_the_window_and_erasure_removes_them(client: TestClient) -> None:
    services = client.app.state.services
    client.post("/events", json=[{**CLICK, "event_id": "old"}, {**CLICK, "customer_id": "other", "event_id": "b"}])
    services.consumer.stop()  # prune ends with a CHECKPOINT, which DuckDB refuses while the consumer writes
    with services.db.write() as cur:
        cur.execute("UPDATE event_keys SET stored_at = stored_at - INTERVAL 25 HOUR WHERE event_key = 'old'")
    detail = upkeep.prune(services.config, services.db, services.events, services.users, services.user_mirror,
                          now_utc, services.impressions.store)
    assert "1 event ids older than the 24 h dedupe window forgotten" in detail
    assert client.post("/events", json={**CLICK, "event_id": "old"}).json()["duplicates"] == 0  # forgotten
    assert client.post("/events", json={**CLICK, "customer_id": "other", "event_id": "b"}).json()["duplicates"] == 1
    assert client.delete("/customers/other").status_code == 200
    assert services.db.read("SELECT event_key FROM event_keys ORDER BY 1") == [("old",)]


def test_a_key_repeated_across_commits_and_within_one_is_stored_once(db: Database) -> None:
    store = EventStore(db)
    events = [Event(1, 2, "product_purchased", T0, key="k1"), Event(1, 3, "product_viewed", T0),
              Event(1, 3, "product_viewed", T0, key="k1")]
    with db.write() as cur:
        first = store.append_in(cur, events, T0)
    assert first.fresh == [True, True, False] and first.event_ids[2] == first.event_ids[0]
    with db.write() as cur:
        again = store.append_in(cur, events[:1], T0 + timedelta(seconds=1))
    assert again.fresh == [False] and again.event_ids == first.event_ids[:1]
    assert store.count() == 2 and store.purchased(1) == frozenset({2})


def test_sqs_arrival_keys_of_an_older_store_keep_deduplicating_after_the_migration(tmp_path) -> None:
    path = tmp_path / "old.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP)")
    for version, steps in enumerate(MIGRATIONS[:-1], start=1):  # the store as the previous schema left it
        for step in steps:
            step(conn) if callable(step) else conn.execute(step)
        conn.execute("INSERT INTO schema_version VALUES (?, current_localtimestamp())", [version])
    conn.execute("INSERT INTO sqs_arrivals VALUES ('sqs:m-1', ?)", [T0])
    conn.close()
    db = Database(path)
    try:
        assert db.schema_version == len(MIGRATIONS)
        store = EventStore(db)
        assert store.append([Event(1, 2, "product_viewed", T0, key="sqs:m-1")], T0) == [0]  # known, not stored
        assert store.count() == 0
    finally:
        db.close()
