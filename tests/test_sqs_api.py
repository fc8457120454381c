"""End to end over a local SQS-compatible server: POST /events -> outbox -> SQS -> consumer -> vector -> feed;
and events a shop backend publishes straight to SQS, stored once and personalised."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from tests.sqs_server import ACCESS_KEY, SECRET, client, make_queues, overrides
from web.app import create_app
from web.bench.common import free_port
from web.bench.sqs_local import moto_server

RUNNING = [1, 2, 3, 4, 5]  # the running shoes of small_catalog


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def shop(tmp_path, encoder, endpoint, caplog):
    caplog.set_level(logging.DEBUG)
    queues = make_queues(endpoint, max_receive_count=3, visibility=1)
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False, "admin_key": "k"},
        "realtime": {"receive_wait_seconds": 1.0},
        **overrides(endpoint, queues.url),
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as http:
        wait_until(lambda: http.get("/health/ready").status_code == 200, what="ready")
        assert http.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(http)
        yield http, queues


def _processed(http: TestClient, n: int) -> bool:
    q = http.get("/queue").json()
    return q["outbox_backlog"] == 0 and q["processed"] >= n


def _events_of(http: TestClient, customer: str) -> int:
    services = http.app.state.services
    key = services.ids.customers.key(customer)
    return 0 if key is None else services.db.read("SELECT count(*) FROM events WHERE customer_id = ?", [key])[0][0]


def _is_running_feed(http: TestClient, customer: str) -> bool:
    feed = http.get(f"/customers/{customer}/feed", params={"per_page": 5}).json()
    return feed["personalized"] and {i["product"]["product_id"] for i in feed["items"][:3]} <= set(map(str, RUNNING))


def test_events_travel_through_sqs_to_a_personal_feed(shop, caplog) -> None:
    http, queues = shop
    events = [{"customer_id": "shopper-1", "product_id": p, "event_name": "product_clicked"} for p in RUNNING]
    assert http.post("/events", json=events).status_code == 202
    wait_until(lambda: _processed(http, len(events)), what="the consumer")
    wait_until(lambda: _is_running_feed(http, "shopper-1"), what="a running-shoe feed")
    q = http.get("/queue")
    body = q.json()
    assert body["backend"] == "sqs" and body["sqs"]["RedrivePolicy"] and body["sqs_unreachable"] is None
    # the credentials are never shown or logged
    for text in (q.text, http.get("/metrics").text, caplog.text):
        assert SECRET not in text and ACCESS_KEY not in text


def test_an_event_published_straight_to_sqs_is_stored_once_and_personalises(shop) -> None:
    http, queues = shop
    sqs = client(http.app.state.services.config.queue.sqs_endpoint_url)
    services = http.app.state.services
    services.consumer.stop()  # drive the consumer by hand: a crash between storing and deleting
    message = {"customer_id": "shopper-2", "product_id": 2, "event_name": "product_added_to_cart"}
    sqs.send_message(QueueUrl=queues.url, MessageBody=json.dumps(message))
    real_delete = services.queue.delete_batch
    services.queue.delete_batch = lambda handles: [False] * len(handles)  # the process dies before deleting
    wait_until(lambda: services.consumer.run_once(1.0) > 0, what="the first delivery")
    assert _events_of(http, "shopper-2") == 1
    services.queue.delete_batch = real_delete
    time.sleep(1.1)  # the visibility timeout passes: SQS delivers the same message again
    wait_until(lambda: services.consumer.run_once(1.0) > 0, what="the redelivery")
    assert _events_of(http, "shopper-2") == 1  # stored once
    assert services.queue.receive(10, 1.0) == []  # deleted this time
    feed = http.get("/customers/shopper-2/feed", params={"per_page": 3}).json()
    assert feed["personalized"], feed
    personal = [i["product"]["product_id"] for i in feed["items"] if i["source"] == "personal"]
    assert personal and set(personal) <= {"1", "2", "3", "4", "5", "6"}, feed  # shoes, nearest to the cart


def test_a_published_event_sent_twice_with_one_event_id_is_stored_once(shop) -> None:
    http, queues = shop
    sqs = client(http.app.state.services.config.queue.sqs_endpoint_url)
    message = {"customer_id": "shopper-4", "product_id": 3, "event_name": "product_clicked", "event_id": "click-77"}
    for _ in range(2):  # two messages (the shop's publisher retried), one event
        sqs.send_message(QueueUrl=queues.url, MessageBody=json.dumps(message))
    wait_until(lambda: http.get("/queue").json()["processed"] >= 2, what="both messages")
    assert _events_of(http, "shopper-4") == 1
    # and the same event_id sent to POST /events is a duplicate of it
    assert http.post("/events", json=message).json()["duplicates"] == 1
    assert _events_of(http, "shopper-4") == 1


def test_malformed_and_unknown_product_messages_go_to_the_dead_letter_queue_with_a_reason(shop) -> None:
    http, queues = shop
    sqs = client(http.app.state.services.config.queue.sqs_endpoint_url)
    sqs.send_message(QueueUrl=queues.url, MessageBody="not json")
    sqs.send_message(QueueUrl=queues.url, MessageBody=json.dumps(
        {"customer_id": "shopper-3", "product_id": "no-such-product", "event_name": "product_viewed"}))
    wait_until(lambda: http.get("/queue").json()["dead_lettered"] == 2, what="two dead letters")
    reasons = sorted(d["reason"] for d in http.get("/queue/dead-letter").json())
    assert reasons[0].startswith("malformed message") and reasons[1] == "unknown product no-such-product"
    assert _events_of(http, "shopper-3") == 0


def test_a_published_event_post_events_would_refuse_is_dead_lettered_with_the_reason(shop) -> None:
    http, queues = shop
    sqs = client(http.app.state.services.config.queue.sqs_endpoint_url)
    good = {"customer_id": "shopper-4", "product_id": "1", "event_name": "product_viewed"}
    for extra in ({"timestamp": "2999-01-01T00:00:00Z"}, {"timestamp": "1969-07-20T20:17:00Z"}, {"colour": "red"}):
        sqs.send_message(QueueUrl=queues.url, MessageBody=json.dumps({**good, **extra}))
    sqs.send_message(QueueUrl=queues.url, MessageBody=json.dumps({**good, "recommendation_id": "rec-1", "position": 2}))
    wait_until(lambda: http.get("/queue").json()["dead_lettered"] == 3, what="three dead letters")
    reasons = sorted(d["reason"] for d in http.get("/queue/dead-letter").json())
    assert all(r.startswith("malformed message: ") for r in reasons)
    assert "in the future" in reasons[2] and "before 1970" in reasons[1] and "unknown field `colour`" in reasons[0]
    wait_until(lambda: _events_of(http, "shopper-4") == 1, what="the good one stored")
    key = http.app.state.services.ids.customers.key("shopper-4")
    assert http.app.state.services.db.read(
        "SELECT recommendation_id, position FROM events WHERE customer_id = ?", [key]) == [("rec-1", 2)]


def _metric(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_events_are_accepted_while_sqs_is_down_and_reach_it_after(tmp_path, encoder, caplog) -> None:
    """And the outage is told, not shouted: the consumer and the outbox sender each log one warning when SQS
    stops answering (no traceback), back off up to their caps, and one info line when it answers again."""
    caplog.set_level(logging.DEBUG)
    cap = 2.0  # the consumer's longest wait between tries (its first is 1 s)
    port = free_port()
    with moto_server(port) as endpoint:
        queues = make_queues(endpoint, visibility=5)
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
        "realtime": {"consumer_backoff_max_seconds": cap},
        **overrides(endpoint, queues.url),
    })
    http = TestClient(create_app(config, encoder=encoder), base_url=LOCAL)
    http.__enter__()  # SQS is down from the start: the appliance starts all the same
    try:
        wait_until(lambda: http.get("/health/ready").status_code == 200, what="ready")
        assert http.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(http)
        events = [{"customer_id": f"down-{i}", "product_id": 1 + i % 5, "event_name": "product_clicked"}
                  for i in range(12)]
        assert http.post("/events", json=events).status_code == 202  # durable in DuckDB, SQS unreachable
        q = http.get("/queue").json()
        assert q["outbox_backlog"] == 12 and q["sqs_unreachable"]
        time.sleep(6.0)  # the consumer tries again after 1, 2, 2, 2 s
        text = http.get("/metrics").text
        for part in ("consumer", "outbox"):
            assert _metric(text, "appliance_queue_outages_total", f'cause="sqs",part="{part}"') == 1
        assert _metric(text, "appliance_queue_outage_seconds", 'part="consumer"') > 5.0
        during = list(caplog.records)
        with moto_server(port):
            wait_until(lambda: _processed(http, 12), what="the outbox to drain and the consumer to catch up")
            assert all(_events_of(http, f"down-{i}") == 1 for i in range(12))
            assert http.get("/customers/down-0/feed").json()["personalized"]
            wait_until(lambda: _metric(http.get("/metrics").text, "appliance_queue_outage_seconds",
                                       'part="consumer"') == 0, what="the consumer's spell to end")
            assert _metric(http.get("/metrics").text, "appliance_queue_outages_total",
                           'cause="sqs",part="consumer"') == 1
    finally:
        http.__exit__(None, None, None)
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("appliance", "jobs", "storage", "web")]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.ERROR]  # no traceback, no error
    for loop, cause in (("event consumer", "SQS unreachable"), ("SQS outbox sender", "send failed")):
        told = [r for r in ours if r.getMessage().startswith(loop) and r.levelno >= logging.INFO]
        assert [r.levelname for r in told] == ["WARNING", "INFO"], loop
        assert cause in told[0].getMessage() and "works again" in told[1].getMessage()
    waits = [float(m.group(1)) for r in during
             if (m := re.search(r"^event consumer still waiting .* next try in ([\d.]+)s", r.getMessage()))]
    assert len(waits) >= 3 and waits[0] == pytest.approx(1.0)  # 1 s, doubling, capped
    assert max(waits) == waits[-1] == pytest.approx(cap)
