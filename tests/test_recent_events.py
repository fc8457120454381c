"""A batch's histories and newest event ids come from one read, the newest of each shopper picked in numpy
(BENCHMARKS.md "Feed under load", seventeenth round). The oracle is the rule as DuckDB states it: a window
function ranking each shopper's events by (ts, event_id), newest first, and max(event_id) over all of them."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from appliance.types import EVENT_NAMES, Event, now_utc
from storage.db import Database
from storage.events import EventStore

RANKED = """SELECT customer_id, product_id, event_name, ts FROM (
                SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY ts DESC, event_id DESC) AS rn
                FROM events WHERE customer_id IN (SELECT unnest($1::BIGINT[]))
                              AND ($2::TIMESTAMP IS NULL OR ts >= $2::TIMESTAMP))
            WHERE rn <= $3 ORDER BY customer_id, ts, event_id"""
NEWEST = "SELECT customer_id, max(event_id) FROM events WHERE customer_id IN (SELECT unnest($1::BIGINT[])) GROUP BY 1"


def _store(db: Database) -> EventStore:
    """Events in several commits, timestamps out of arrival order (a late event is older than earlier ones), ties
    in ts (the later event_id is the newer), some shoppers with one event and some with 60."""
    events, rng, now = EventStore(db), np.random.default_rng(3), now_utc()
    for _ in range(6):
        n = 300
        customers = rng.integers(1, 40, n)
        minutes = rng.integers(0, 4 * 24 * 60, n)  # spread over four days, arriving in random order
        minutes[rng.random(n) < 0.2] = 600  # many share one timestamp
        events.append([Event(int(c), int(p), EVENT_NAMES[int(k)], now - timedelta(minutes=int(m)))
                       for c, p, k, m in zip(customers, rng.integers(1, 500, n), rng.integers(0, 4, n), minutes,
                                             strict=True)], now)
    events.append([Event(77, 5, "product_viewed", now - timedelta(days=3))], now)  # one event, outside 48 h
    return events


def test_histories_and_newest_ids_are_what_the_ranked_query_gives(db: Database) -> None:
    events = _store(db)
    asked = [*range(1, 45), 77]  # 40-44 have no event at all
    since = now_utc() - timedelta(hours=48)
    for window in (None, since):
        for limit in (1, 5, 20, 100):
            want: dict[int, list[Event]] = {c: [] for c in asked}
            for row in db.read(RANKED, [asked, window, limit]):
                want[row[0]].append(Event(*row))
            newest = dict(db.read(NEWEST, [asked]))
            ids, found = events.recent(asked, window, limit)
            assert found == want, (window, limit)
            assert events.histories(asked, window, limit) == want
            assert ids == [newest.get(c, 0) for c in asked]  # over all their events, whatever the window
    assert events.recent([77], since, 20) == ([newest[77]], {77: []})  # a newest id with no history inside 48 h
    assert any(len(h) == 20 for h in events.histories(asked, None, 20).values())  # the limit did cut


def test_nobody_asked_and_nothing_stored_give_empty_answers(db: Database) -> None:
    events = EventStore(db)
    assert events.recent([], None, 20) == ([], {})
    assert events.recent([4, 2], now_utc(), 20) == ([0, 0], {4: [], 2: []})
