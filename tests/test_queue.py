"""The durable queue: SQS semantics (visibility, receipt handles, DLQ, dedup, long poll) on real DuckDB files."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobs.queue import DurableQueue
from storage.db import Database

START = datetime(2025, 6, 1, 12, 0, 0)


class Clock:
    """A hand-driven naive-UTC clock."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def body(customer_id: int, product_id: int = 1, event_name: str = "product_clicked") -> dict:
    return {"customer_id": customer_id, "product_id": product_id, "event_name": event_name}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path):
    database = Database(tmp_path / "queue.duckdb")
    yield database
    database.close()


@pytest.fixture
def queue(db: Database, clock: Clock) -> DurableQueue:
    return DurableQueue(db, visibility_timeout=30, max_receive_count=3, clock=clock)


def wait_until_polling(queue: DurableQueue, thread: threading.Thread) -> None:
    """Block until `thread` waits on the queue's condition (so the wake-up under test is a real one)."""
    while thread.is_alive() and not queue._changed._waiters:  # CPython's Condition keeps its waiters here
        threading.Event().wait(0.001)


def test_send_receive_delete(queue: DurableQueue, clock: Clock) -> None:
    ids = queue.send_batch([body(1), body(2), body(3)])
    assert len(set(ids)) == 3
    clock.advance(5)
    assert queue.stats().depth == 3 and queue.stats().oldest_age_seconds == 5.0
    got = queue.receive(max_messages=10)
    assert [m.message_id for m in got] == ids  # FIFO
    assert [m.body for m in got] == [body(1), body(2), body(3)]
    assert all(m.receive_count == 1 and m.sent_at == START for m in got)
    assert len({m.receipt_handle for m in got}) == 3
    stats = queue.stats()
    assert (stats.depth, stats.in_flight, stats.dead_lettered) == (0, 3, 0)
    assert queue.receive() == []
    assert queue.delete(got[0].receipt_handle) is True
    assert queue.delete(got[0].receipt_handle) is False  # already gone
    assert queue.delete_batch([got[1].receipt_handle, "nonsense", got[2].receipt_handle]) == [True, False, True]
    stats = queue.stats()
    assert (stats.depth, stats.in_flight, stats.dead_lettered, stats.oldest_age_seconds) == (0, 0, 0, 0.0)
    assert queue.db.read("SELECT count(*) FROM queue_messages")[0][0] == 0  # done messages are removed


def test_receive_respects_max_messages(queue: DurableQueue) -> None:
    queue.send_batch([body(c) for c in range(5)])
    assert [m.body["customer_id"] for m in queue.receive(max_messages=2)] == [0, 1]
    assert [m.body["customer_id"] for m in queue.receive(max_messages=10)] == [2, 3, 4]


def test_redelivery_after_visibility_timeout_with_new_handle(queue: DurableQueue, clock: Clock) -> None:
    mid = queue.send(body(1))
    (first,) = queue.receive()
    clock.advance(29)
    assert queue.receive() == []  # still in flight
    clock.advance(2)
    (second,) = queue.receive()
    assert second.message_id == mid and second.receive_count == 2
    assert second.receipt_handle != first.receipt_handle
    assert queue.delete(first.receipt_handle) is False  # a stale handle does not delete
    assert queue.stats().in_flight == 1
    assert queue.delete(second.receipt_handle) is True


def test_receive_with_own_visibility_timeout_and_change_visibility(queue: DurableQueue, clock: Clock) -> None:
    queue.send(body(1))
    (m,) = queue.receive(visibility_timeout=5)
    clock.advance(6)
    (m,) = queue.receive()
    assert queue.change_visibility(m.receipt_handle, 120) is True
    clock.advance(60)
    assert queue.receive() == []  # extended past the default 30 s
    assert queue.change_visibility(m.receipt_handle, 0) is True
    (again,) = queue.receive()
    assert again.receive_count == 3
    assert queue.change_visibility(m.receipt_handle, 10) is False  # stale


def test_dead_letter_after_max_receive_count(queue: DurableQueue, clock: Clock) -> None:
    poison = queue.send(body(1, product_id=1))
    for attempt in range(1, 4):
        (m,) = queue.receive()
        assert (m.message_id, m.receive_count) == (poison, attempt)
        clock.advance(31)
    follower = queue.send(body(1, product_id=2))  # same customer, queued behind the poison message
    (m,) = queue.receive()  # the 4th delivery would exceed max_receive_count=3: DLQ, and the group moves on
    assert (m.message_id, m.receive_count) == (follower, 1)
    (dead,) = queue.dead_letters()
    assert (dead.message_id, dead.body, dead.receive_count) == (poison, body(1, product_id=1), 3)
    assert "max_receive_count" in dead.reason and dead.dead_at == clock.now
    assert queue.stats().dead_lettered == 1


def test_fail_moves_to_dead_letters_with_reason(queue: DurableQueue) -> None:
    queue.send(body(1, product_id=5678))
    (m,) = queue.receive()
    assert queue.fail(m.receipt_handle, "unknown product 5678") is True
    assert queue.fail(m.receipt_handle, "again") is False
    assert queue.delete(m.receipt_handle) is False  # no longer in flight
    assert [(d.reason, d.receive_count) for d in queue.dead_letters()] == [("unknown product 5678", 1)]
    stats = queue.stats()
    assert (stats.depth, stats.in_flight, stats.dead_lettered) == (0, 0, 1)
    assert queue.receive() == []


def test_redrive_moves_dead_letters_back_behind_newer_messages(queue: DurableQueue) -> None:
    first = queue.send(body(1, product_id=1))
    second = queue.send(body(2, product_id=2))
    for m in queue.receive():
        queue.fail(m.receipt_handle, "broken")
    newer = queue.send(body(1, product_id=3))
    assert queue.redrive(limit=1) == 1  # oldest first
    assert [d.message_id for d in queue.dead_letters()] == [second]
    got = queue.receive()
    assert [m.message_id for m in got] == [newer, first]  # customer 1: the redriven message queues behind `newer`
    assert got[1].receive_count == 1  # receive count was reset
    assert queue.redrive() == 1 and queue.redrive() == 0
    assert queue.stats().dead_lettered == 0


def test_dedup_within_window(queue: DurableQueue, clock: Clock) -> None:
    a = queue.send(body(1), dedup_id="evt-1")
    assert queue.send(body(1), dedup_id="evt-1") == a
    ids = queue.send_batch([body(2), body(3), body(2)], dedup_ids=["evt-2", None, "evt-2"])
    assert ids[0] == ids[2] != ids[1]
    assert queue.stats().depth == 3
    for m in queue.receive():
        queue.delete(m.receipt_handle)
    clock.advance(299)
    assert queue.send(body(1), dedup_id="evt-1") == a  # remembered after deletion, within the window
    assert queue.stats().depth == 0
    clock.advance(2)
    fresh = queue.send(body(1), dedup_id="evt-1")  # the window has passed: a new message
    assert fresh != a and queue.stats().depth == 1
    assert queue.db.read("SELECT count(*) FROM queue_dedup")[0][0] == 1  # expired ids are pruned


def test_batch_limits(queue: DurableQueue, db: Database) -> None:
    with pytest.raises(ValueError, match="at most 10"):
        queue.send_batch([body(c) for c in range(11)])
    with pytest.raises(ValueError):
        queue.receive(max_messages=11)
    with pytest.raises(ValueError):
        queue.send_batch([body(1)], dedup_ids=["a", "b"])
    with pytest.raises(ValueError):
        queue.send({"customer_id": 1, "when": datetime(2025, 1, 1)})
    assert queue.stats().depth == 0
    with db.write() as cur:  # the group-commit path is not limited to 10
        assert len(queue.enqueue_in(cur, [body(c) for c in range(25)])) == 25
    assert queue.stats().depth == 25


def test_long_poll_wakes_on_send_from_another_thread(queue: DurableQueue) -> None:
    got: list = []
    poller = threading.Thread(target=lambda: got.extend(queue.receive(wait_seconds=30)))
    poller.start()
    wait_until_polling(queue, poller)
    mid = queue.send(body(7))
    poller.join(timeout=20)
    assert not poller.is_alive()
    assert [m.message_id for m in got] == [mid]


def test_long_poll_wakes_on_enqueue_in_commit_and_on_close(queue: DurableQueue, db: Database) -> None:
    got: list = []
    poller = threading.Thread(target=lambda: got.extend(queue.receive(wait_seconds=30)))
    poller.start()
    wait_until_polling(queue, poller)
    with db.write() as cur:
        (mid,) = queue.enqueue_in(cur, [body(8)])
    poller.join(timeout=20)
    assert [m.message_id for m in got] == [mid]

    poller = threading.Thread(target=lambda: got.extend(queue.receive(wait_seconds=30)))
    poller.start()
    wait_until_polling(queue, poller)
    queue.close()
    poller.join(timeout=20)
    assert not poller.is_alive() and len(got) == 1


def test_per_customer_ordering(queue: DurableQueue, clock: Clock) -> None:
    a1, a2 = queue.send(body(1, product_id=1)), queue.send(body(1, product_id=2))
    b1 = queue.send(body(2, product_id=1))
    c1 = queue.send({"product_id": 9, "event_name": "product_viewed"})  # no customer: a group of its own
    got = queue.receive(max_messages=10)
    assert [m.message_id for m in got] == [a1, a2, b1, c1]  # a customer's waiting messages together, in order
    a3 = queue.send(body(1, product_id=3))
    assert queue.receive() == []  # a3 waits while a1 and a2 are in flight
    assert queue.delete(got[0].receipt_handle)  # a1 done
    assert queue.receive() == []  # a2 still in flight: a3 still waits
    assert (queue.stats().depth, queue.stats().in_flight) == (1, 3)  # a3 waits; a2, b1 and c1 are out
    clock.advance(31)
    again = [m.message_id for m in queue.receive() if m.body.get("customer_id") == 1]
    assert again == [a2, a3]  # a2 timed out: it comes back before a3, with it


def test_a_receive_takes_the_oldest_customers_messages_first_up_to_its_limit(queue: DurableQueue) -> None:
    sent = [queue.send(body(customer, product_id=i)) for i, customer in enumerate((1, 2, 1, 2, 1, 1, 3))]
    ones, twos, three = [sent[i] for i in (0, 2, 4, 5)], [sent[1], sent[3]], sent[6]
    first = queue.receive(max_messages=3)
    assert [m.message_id for m in first] == ones[:3]  # customer 1 was first: as many of theirs as fit
    second = queue.receive(max_messages=3)
    assert [m.message_id for m in second] == [*twos, three]  # customer 1 is in flight: blocked until deleted
    assert queue.receive(max_messages=3) == []
    assert all(queue.delete_batch([m.receipt_handle for m in first]))
    assert [m.message_id for m in queue.receive(max_messages=3)] == [ones[3]]


def test_restart_resumes_unacknowledged_messages(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "restart.duckdb"
    db = Database(path)
    queue = DurableQueue(db, visibility_timeout=60, max_receive_count=3, clock=clock)
    inflight = queue.send(body(1))
    waiting = queue.send(body(2))
    (m,) = queue.receive(max_messages=1)
    assert m.message_id == inflight
    db.close()  # the process dies without deleting

    db = Database(path)
    queue = DurableQueue(db, visibility_timeout=60, max_receive_count=3, clock=clock)
    assert [m.message_id for m in queue.receive()] == [waiting]
    clock.advance(61)
    got = {m.message_id: m for m in queue.receive()}
    assert got[inflight].receive_count == 2 and got[inflight].body == body(1)
    assert queue.send(body(3)) not in (inflight, waiting)  # ids keep increasing across restarts
    db.close()


def test_enqueue_in_rolled_back_leaves_nothing(queue: DurableQueue, db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as cur:
        cur.execute("INSERT INTO events (customer_id, product_id, event_name, ts, received_at) "
                    "VALUES (1, 2, 'product_clicked', $1, $1)", [START])
        queue.enqueue_in(cur, [body(1, product_id=2)], dedup_ids=["evt-9"])
        raise RuntimeError("the request failed after the writes")
    assert db.read("SELECT count(*) FROM events")[0][0] == 0
    assert queue.stats().depth == 0 and queue.receive() == []
    with db.write() as cur:  # committed: the event row and its message together; the dedup id was not kept
        cur.execute("INSERT INTO events (customer_id, product_id, event_name, ts, received_at) "
                    "VALUES (1, 2, 'product_clicked', $1, $1)", [START])
        queue.enqueue_in(cur, [body(1, product_id=2)], dedup_ids=["evt-9"])
    assert db.read("SELECT count(*) FROM events")[0][0] == 1
    assert [m.body for m in queue.receive()] == [body(1, product_id=2)]


def test_release_in_flight_delivers_again_at_once_after_a_restart(tmp_path) -> None:
    path = tmp_path / "q.duckdb"
    db = Database(path)
    queue = DurableQueue(db, visibility_timeout=300, max_receive_count=5, clock=lambda: START)
    queue.send(body(1))
    assert len(queue.receive()) == 1
    db.close()
    db = Database(path)
    queue = DurableQueue(db, visibility_timeout=300, max_receive_count=5, clock=lambda: START)
    assert queue.receive() == []
    assert queue.release_in_flight() == 1
    again = queue.receive()
    assert [m.body for m in again] == [body(1)] and again[0].receive_count == 2
    db.close()


def test_the_dead_letter_queue_is_bounded_by_count_and_age(db: Database, clock: Clock) -> None:
    queue = DurableQueue(db, visibility_timeout=30, max_receive_count=3, clock=clock,
                         dead_letter_max=3, dead_letter_retention=86400)
    ids = queue.send_batch([body(c) for c in range(1, 6)])
    for m in queue.receive(max_messages=10):
        clock.advance(1)
        assert queue.fail(m.receipt_handle, f"broken {m.body['customer_id']}")
    assert [d.message_id for d in queue.dead_letters()] == ids[2:]  # the newest three; the oldest dropped
    stats = queue.stats()
    assert (stats.dead_lettered, stats.dead_letters_dropped) == (3, 2)
    clock.advance(86399.5)  # the first two kept dead letters pass the one-day retention, the last not yet
    assert queue.receive() == []
    assert [d.message_id for d in queue.dead_letters()] == ids[4:]
    assert queue.stats().dead_letters_dropped == 4
    assert queue.redrive() == 1 and queue.stats().dead_letters_dropped == 4  # redrive drops nothing


def test_dead_letter_drops_are_counted_across_restarts(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.duckdb"
    for _ in range(2):
        database = Database(path)
        queue = DurableQueue(database, visibility_timeout=30, max_receive_count=3, clock=clock, dead_letter_max=1)
        queue.send_batch([body(1), body(2)])
        for m in queue.receive(max_messages=10):
            queue.fail(m.receipt_handle, "broken")
        database.close()
    database = Database(path)
    try:
        assert DurableQueue(database, visibility_timeout=30, max_receive_count=3).stats().dead_letters_dropped == 3
    finally:
        database.close()


def test_receive_in_hands_out_with_the_callers_transaction_or_not_at_all(queue: DurableQueue, db: Database) -> None:
    a1, b1 = queue.send(body(1)), queue.send(body(2))
    (first,) = queue.receive(max_messages=1)
    a2 = queue.send(body(1, product_id=2))
    with db.write() as cur:
        deleted = queue.delete_batch_in(cur, [first.receipt_handle])
        ahead = queue.receive_in(cur, 10)
    assert first.message_id == a1 and deleted() == [True]
    assert [m.message_id for m in ahead()] == [b1, a2]  # a1's delete, in the same transaction, freed customer 1
    assert queue.receive() == []  # both in flight
    c1 = queue.send(body(3))
    with pytest.raises(RuntimeError), db.write() as cur:
        queue.receive_in(cur, 10)
        raise RuntimeError("rolled back")
    assert [m.message_id for m in queue.receive()] == [c1]  # the rolled-back receive handed out nothing
