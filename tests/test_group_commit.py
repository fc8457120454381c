"""Group commit of POST /events: concurrent requests share a transaction, each answered with its own rows."""

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from appliance.errors import StoreUnavailable
from appliance.types import Event
from jobs.ingest import GroupCommit
from jobs.queue import DurableQueue
from storage.db import Database
from storage.events import EventStore

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _request(customer: int, n: int) -> tuple[list[Event], list[dict]]:
    events = [Event(customer, 100 + i, "product_viewed", NOW) for i in range(n)]
    return events, [{"customer_id": str(customer), "product_id": str(100 + i), "event_name": "product_viewed"}
                    for i in range(n)]


@pytest.fixture
def ingest(db: Database) -> GroupCommit:
    return GroupCommit(db, EventStore(db), DurableQueue(db, visibility_timeout=30, max_receive_count=3))


def _run_held(ingest: GroupCommit, requests: Sequence[tuple[list[Event], list[dict]]]) -> list:
    """Send the requests from threads while the committer is held, so all of them queue up; then release."""
    results: list = [None] * len(requests)

    def send(i: int) -> None:
        try:
            results[i] = ingest.append(*requests[i], NOW).event_ids
        except Exception as exc:
            results[i] = exc

    with ingest._committer:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        while len(ingest._pending) < len(requests):
            threading.Event().wait(0.01)
    for t in threads:
        t.join(30)
    return results


def test_queued_requests_share_one_commit_and_each_gets_its_own_event_ids(ingest: GroupCommit, db: Database) -> None:
    requests = [_request(customer, n) for customer, n in ((1, 3), (2, 1), (3, 5), (4, 2))]
    results = _run_held(ingest, requests)
    assert (ingest.commits, ingest.requests) == (1, 4)
    for (events, _), ids in zip(requests, results, strict=True):
        assert len(ids) == len(events)
        rows = db.read("SELECT customer_id, product_id FROM events WHERE event_id IN (SELECT unnest($1::BIGINT[]))"
                       " ORDER BY event_id", [ids])
        assert rows == [(e.customer_id, e.product_id) for e in events]
    assert db.read("SELECT count(*) FROM queue_messages")[0][0] == 11


def test_a_failing_request_fails_alone_and_the_others_of_its_group_commit(ingest: GroupCommit, db: Database) -> None:
    good, other = _request(1, 2), _request(3, 1)
    bad = (_request(2, 1)[0], ["not a message body"])  # the queue refuses it, inside the group's transaction
    results = _run_held(ingest, [good, bad, other])
    assert isinstance(results[1], ValueError)
    assert len(results[0]) == 2 and len(results[2]) == 1
    stored = db.read("SELECT customer_id FROM events ORDER BY event_id")
    assert sorted(c for (c,) in stored) == [1, 1, 3]  # nothing of the failed request is kept
    assert db.read("SELECT count(*) FROM queue_messages")[0][0] == 3


def test_a_group_never_exceeds_its_event_cap_and_no_request_is_split(db: Database) -> None:
    ingest = GroupCommit(db, EventStore(db), DurableQueue(db, visibility_timeout=30, max_receive_count=3),
                         max_events=4)
    results = _run_held(ingest, [_request(c, 3) for c in range(1, 5)])
    assert all(len(ids) == 3 for ids in results)
    assert (ingest.commits, ingest.requests) == (4, 4)  # 3 + 3 > 4: one request per transaction
    assert db.read("SELECT count(*) FROM events")[0][0] == 12


def test_two_requests_of_one_group_with_the_same_event_id_store_it_once(ingest: GroupCommit, db: Database) -> None:
    event = Event(1, 100, "product_clicked", NOW, key="tap-1")
    body = {"customer_id": "1", "product_id": "100", "event_name": "product_clicked"}
    results = _run_held(ingest, [([event], [body]), ([event], [body]), _request(2, 1)])
    assert ingest.commits == 1 and results[0] == results[1]  # the retry answers with the first one's id
    assert db.read("SELECT count(*) FROM events")[0][0] == 2
    assert db.read("SELECT count(*) FROM queue_messages")[0][0] == 2  # one message per stored event


def test_waiting_requests_hold_no_thread_so_a_group_is_not_capped_by_a_pool(ingest: GroupCommit, db: Database) -> None:
    """POST /events awaits its future on the event loop: 20 requests queued from one thread share one commit
    (a handler blocking a pool thread each could never group more requests than the pool has threads)."""
    with ingest._committer:
        futures = [ingest.submit(*_request(customer, 2), NOW) for customer in range(1, 21)]
        assert not any(f.done() for f in futures)  # nothing is answered before its commit
    assert [len(f.result(timeout=30).event_ids) for f in futures] == [2] * 20
    assert (ingest.commits, ingest.requests) == (1, 20)
    assert db.read("SELECT count(*) FROM events")[0][0] == 40


def test_closing_commits_what_was_taken_and_refuses_what_comes_after(ingest: GroupCommit, db: Database) -> None:
    with ingest._committer:
        taken = [ingest.submit(*_request(customer, 1), NOW) for customer in (1, 2, 3)]
        closing = threading.Thread(target=ingest.close)
        closing.start()
        while not ingest._closed:
            threading.Event().wait(0.01)
    closing.join(30)
    assert all(len(f.result(timeout=30).event_ids) == 1 for f in taken)
    with pytest.raises(StoreUnavailable):
        ingest.submit(*_request(4, 1), NOW)
    assert db.read("SELECT count(*) FROM events")[0][0] == 3
