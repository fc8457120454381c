"""POST /events' group commit in two DuckDB calls (storage/stage.py): the calls a transaction makes, the batch's order
kept across tables, and a fault between the two calls (real DuckDB files)."""

from datetime import UTC, datetime

import pytest

from appliance.types import Event
from jobs.ingest import GroupCommit
from jobs.queue import DurableQueue
from storage.db import Database
from storage.events import EventStore

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


class _Counting:
    """The writer's cursor, counting the DuckDB calls made through it (each gives up the GIL and takes it back);
    `fail_on`: a call whose SQL contains it raises instead of running."""

    def __init__(self, cur, fail_on: str | None = None) -> None:  # noqa: ANN001
        self.cur, self.fail_on, self.calls = cur, fail_on, []

    def execute(self, sql: str, params=None) -> "_Counting":  # noqa: ANN001
        self.calls.append(sql)
        if self.fail_on is not None and self.fail_on in sql:
            raise OSError("injected: the second call fails")
        self.cur.execute(sql, params)
        return self

    def fetchall(self) -> list:
        return self.cur.fetchall()

    def begin(self) -> None:
        self.calls.append("BEGIN")
        self.cur.begin()

    def commit(self) -> None:
        self.calls.append("COMMIT")
        self.cur.commit()

    def rollback(self) -> None:
        self.cur.rollback()


@pytest.fixture
def ingest(db: Database) -> GroupCommit:
    return GroupCommit(db, EventStore(db), DurableQueue(db, visibility_timeout=30, max_receive_count=3))


def _counted(db: Database, monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> list[_Counting]:
    made: list[_Counting] = []
    real = db.cursor

    def cursor() -> _Counting:
        made.append(_Counting(real(), fail_on))
        return made[-1]

    monkeypatch.setattr(db, "cursor", cursor)
    return made


def _body(e: Event) -> dict:
    return {"customer_id": str(e.customer_id), "product_id": str(e.product_id), "event_name": e.event_name}


def test_a_group_commit_is_two_duckdb_calls_and_three_with_event_ids(
        ingest: GroupCommit, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events, their queue messages and a purchase in one transaction of two calls (the base code made five:
    begin, the events' INSERT, the queue's ids, its INSERT and the commit, six with a purchase)."""
    made = _counted(db, monkeypatch)
    events = [Event(1, 10, "product_viewed", NOW), Event(1, 11, "product_purchased", NOW)]
    ingest.append(events, [_body(e) for e in events], NOW)
    assert len(made[-1].calls) == 2
    keyed = [Event(2, 12, "product_clicked", NOW, key="k-1"), Event(2, 13, "product_viewed", NOW, key="k-2")]
    ingest.append(keyed, [_body(e) for e in keyed], NOW)
    assert len(made[-1].calls) == 3  # the stored keys are read first, in the call that begins
    assert db.read("SELECT count(*) FROM events")[0][0] == 4
    assert db.read("SELECT count(*) FROM queue_messages")[0][0] == 4
    assert db.read("SELECT product_ids FROM purchases WHERE customer_id = 1")[0][0] == [11]
    assert sorted(db.read("SELECT event_key FROM event_keys")) == [("k-1",), ("k-2",)]


def test_a_large_batch_keeps_its_order_in_every_table(ingest: GroupCommit, db: Database) -> None:
    """5,000 events (three of DuckDB's vectors): ids ascend in the batch's order, and the n-th message is the n-th
    event's, so the queue hands out a shopper's messages in the order they were sent."""
    events = [Event(1 + i % 7, 1000 + i, "product_purchased" if i % 500 == 0 else "product_viewed", NOW,
                    key=f"k-{i}" if i % 3 == 0 else None) for i in range(5000)]
    ids = ingest.append(events, [_body(e) for e in events], NOW).event_ids
    assert ids == sorted(ids) and len(set(ids)) == 5000
    stored = db.read("SELECT event_id, product_id FROM events ORDER BY event_id")
    assert stored == [(i, e.product_id) for i, e in zip(ids, events, strict=True)]
    bodies = db.read("SELECT body FROM queue_messages ORDER BY message_id")
    assert [f'"product_id":"{e.product_id}"' in b for (b,), e in zip(bodies, events, strict=True)] == [True] * 5000
    assert db.read("SELECT count(*), min(seq = message_id) FROM queue_messages")[0] == (5000, True)
    keys = dict(db.read("SELECT event_key, event_id FROM event_keys"))
    assert keys == {e.key: i for i, e in zip(ids, events, strict=True) if e.key is not None}
    bought = dict(db.read("SELECT customer_id, product_ids FROM purchases"))
    assert {c: sorted(p) for c, p in bought.items()} == {
        1 + i % 7: sorted(1000 + j for j in range(0, 5000, 500) if j % 7 == i % 7) for i in range(0, 5000, 500)}


def test_a_fault_in_the_second_call_keeps_nothing_and_the_next_group_commits(
        ingest: GroupCommit, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first call has begun the transaction and staged the rows; the second (every INSERT and the COMMIT) fails:
    the request is told, nothing of it stays (no event, no message, no purchase), and the writer goes on."""
    made = _counted(db, monkeypatch, fail_on="COMMIT")
    events = [Event(1, 10, "product_purchased", NOW), Event(1, 11, "product_viewed", NOW, key="k-1")]
    with pytest.raises(OSError, match="injected"):
        ingest.append(events, [_body(e) for e in events], NOW)
    assert len(made[-1].calls) == 3  # the keys read, the stage, then the failing call
    monkeypatch.undo()
    for table in ("events", "queue_messages", "purchases", "event_keys"):
        assert db.read(f"SELECT count(*) FROM {table}")[0][0] == 0, table
    ids = ingest.append(events, [_body(e) for e in events], NOW).event_ids
    assert len(ids) == 2 and db.read("SELECT count(*) FROM queue_messages")[0][0] == 2
