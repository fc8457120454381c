"""The SQS backend against a real local SQS-compatible server: outbox, delivery, redelivery, dead letters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from appliance.errors import InvalidInput
from jobs.sqs import SqsQueue, sqs_client
from storage.db import Database
from tests.sqs_server import client, make_queues, queue_config
from web.bench.common import free_port
from web.bench.sqs_local import moto_server

BODY = {"customer_id": "anon-7f3a", "product_id": "85123A", "event_name": "product_clicked"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _queue(db: Database, endpoint: str, **kw) -> SqsQueue:
    queues = make_queues(endpoint, **kw)
    config = queue_config(endpoint, queues.url)
    return SqsQueue(db, sqs_client(config), config)


def _enqueue(queue: SqsQueue, db: Database, bodies: list[dict]) -> None:
    with db.write() as cur:
        queue.enqueue_in(cur, bodies)


def _receive(queue: SqsQueue, wait: float = 1.0, **kw):
    return queue.receive(max_messages=10, wait_seconds=wait, **kw)


def test_outbox_rows_reach_sqs_and_leave_the_outbox(db, endpoint) -> None:
    queue = _queue(db, endpoint)
    _enqueue(queue, db, [BODY, {**BODY, "customer_id": "c2"}])
    assert queue.stats().outbox_backlog == 2  # committed in DuckDB, not yet in SQS
    assert queue.sender.drain_once() == 2
    assert queue.stats().outbox_backlog == 0
    got = _receive(queue)
    assert sorted(m.body["customer_id"] for m in got) == ["anon-7f3a", "c2"]
    assert all(m.receive_count == 1 for m in got)
    assert queue.delete_batch([m.receipt_handle for m in got]) == [True, True]
    assert _receive(queue, wait=0) == []


def test_a_rolled_back_transaction_sends_nothing(db, endpoint) -> None:
    queue = _queue(db, endpoint)
    with pytest.raises(RuntimeError), db.write() as cur:
        queue.enqueue_in(cur, [BODY])
        raise RuntimeError("the event insert failed")
    assert queue.stats().outbox_backlog == 0 and queue.sender.drain_once() == 0


def test_a_message_not_deleted_comes_back_then_goes_to_the_dead_letter_queue(db, endpoint) -> None:
    queue = _queue(db, endpoint, max_receive_count=2, visibility=1)
    _enqueue(queue, db, [BODY])
    queue.sender.drain_once()
    first = _receive(queue)
    assert len(first) == 1 and first[0].receive_count == 1
    assert _receive(queue, wait=0) == []  # in flight: invisible until the visibility timeout
    time.sleep(1.2)  # the consumer "crashed": it never deleted
    again = _receive(queue, wait=2)
    assert [m.message_id for m in again] == [first[0].message_id] and again[0].receive_count == 2
    time.sleep(1.2)
    assert _receive(queue, wait=1) == []  # SQS moved it on the third receive (maxReceiveCount 2)
    dead = queue.dead_letters()
    assert [d.body for d in dead] == [BODY] and dead[0].reason == "maxReceiveCount reached"
    stats = queue.stats()
    assert (stats.dead_lettered, stats.depth, stats.in_flight) == (1, 0, 0)
    assert json.loads(stats.attributes["RedrivePolicy"])["maxReceiveCount"] in (2, "2")


def test_fail_sends_the_message_to_the_dead_letter_queue_with_its_reason_and_redrive_brings_it_back(
        db, endpoint) -> None:
    queue = _queue(db, endpoint)
    _enqueue(queue, db, [BODY])
    queue.sender.drain_once()
    (message,) = _receive(queue)
    assert queue.fail(message.receipt_handle, "unknown product 85123A")
    assert not queue.fail(message.receipt_handle, "again")  # the handle is spent
    assert _receive(queue, wait=0) == []
    (dead,) = queue.dead_letters()
    assert (dead.body, dead.reason) == (BODY, "unknown product 85123A")
    assert queue.redrive() == 1
    (back,) = _receive(queue)
    assert back.body == BODY and queue.stats().dead_lettered == 0


def test_fifo_groups_by_shopper_and_drops_a_resend(db, endpoint) -> None:
    queue = _queue(db, endpoint, fifo=True)
    _enqueue(queue, db, [BODY, {**BODY, "event_name": "product_viewed"}, {**BODY, "customer_id": "c2"}])
    rows = queue.outbox.oldest(10)
    resend = [(str(i), g, b, f"outbox-{i}") for i, g, b in rows]
    assert queue.sender.drain_once() == 3
    assert len(queue.send_entries(resend)) == 3  # a resend after a lost reply: SQS accepts and drops it
    (first,) = queue.receive(max_messages=1, wait_seconds=1)
    assert (first.body["customer_id"], first.body["event_name"]) == ("anon-7f3a", "product_clicked")
    # while anon-7f3a's first message is in flight, its group is held: only c2's message is handed out
    (other,) = _receive(queue)
    assert other.body["customer_id"] == "c2"
    queue.delete_batch([first.receipt_handle, other.receipt_handle])
    (second,) = _receive(queue)
    assert second.body["event_name"] == "product_viewed"
    queue.delete_batch([second.receipt_handle])
    assert _receive(queue, wait=0) == []  # the resend was deduplicated


def test_an_outage_delays_messages_and_loses_none(tmp_path) -> None:
    port = free_port()
    db = Database(tmp_path / "outage.duckdb")
    try:
        with moto_server(port) as endpoint:
            queue = _queue(db, endpoint)
            queue.start()
        # SQS is down: events keep committing, the sender backs off, /queue still tells the backlog
        bodies = [{**BODY, "customer_id": f"c{i}"} for i in range(25)]
        for i in range(0, 25, 5):
            _enqueue(queue, db, bodies[i:i + 5])
        time.sleep(0.5)
        stats = queue.stats()
        assert stats.outbox_backlog == 25 and stats.unreachable
        assert queue.sender.last_error
        with moto_server(port):
            deadline = time.monotonic() + 30
            while queue.stats().outbox_backlog and time.monotonic() < deadline:
                time.sleep(0.1)
            assert queue.stats().outbox_backlog == 0
            seen = []
            while got := _receive(queue, wait=1):
                seen += [m.body["customer_id"] for m in got]
                queue.delete_batch([m.receipt_handle for m in got])
            assert sorted(seen) == sorted(b["customer_id"] for b in bodies)
            queue.close()
    finally:
        db.close()


def test_a_queue_without_a_redrive_policy_is_refused(db, endpoint) -> None:
    url = client(endpoint).create_queue(QueueName="no-dead-letters")["QueueUrl"]
    config = queue_config(endpoint, url)
    with pytest.raises(InvalidInput, match="redrive policy"):
        SqsQueue(db, sqs_client(config), config).start()
