"""A queued message's body passes the checks of POST /events (web/queued.py): fields, types, bounded timestamps."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from appliance.errors import InvalidInput
from appliance.types import Event
from jobs.queue import BodyEvent, event_body
from web.queued import queued_event

SENT = datetime(2025, 6, 1, 12, 0, 0)
SKEW = 300.0  # events.max_future_seconds


def body(customer_id: int | str, product_id: int | str = 1, event_name: str = "product_clicked", **more) -> dict:
    return {"customer_id": customer_id, "product_id": product_id, "event_name": event_name, **more}


def read(b: object) -> BodyEvent:
    return queued_event(b, SENT, SKEW)


def test_our_own_bodies_and_a_shops_round_trip() -> None:
    event = Event(7, 8, "product_clicked", datetime(2025, 6, 1, 9, 30, 0, 250000))  # keys inside; shop's ids out
    assert read(event_body(event, "anon-7f3a", "85123A")) == BodyEvent(
        "anon-7f3a", "85123A", "product_clicked", event.ts, None, None)
    # a body queued before string ids (integers) means the same shopper and product as their decimal strings
    assert read(body(12345, 5678)) == read(body("12345", "5678"))
    assert read(body(1)).ts == SENT  # no timestamp: when it was sent
    assert read(body(1, timestamp="2025-06-01T11:00:00+02:00")).ts == datetime(2025, 6, 1, 9)
    assert read(body(1, timestamp="2025-06-01T12:04:59Z")).ts == datetime(2025, 6, 1, 12, 4, 59)  # within the skew
    tagged = read(body(1, recommendation_id="rec-9", position=4))  # a shop sends attribution back through SQS too
    assert (tagged.recommendation_id, tagged.position) == ("rec-9", 4)


@pytest.mark.parametrize(("bad", "field", "words"), [
    ({"product_id": 1, "event_name": "product_clicked"}, "customer_id", "missing required field"),
    (body(1, event_name="product_licked"), "event_name", "Invalid enum value"),
    (body(1, 56.78), "product_id", "Expected"),
    (body(1, True), "product_id", "Expected"),
    (body("anon 7f3a"), "customer_id", ""),
    (body(""), "customer_id", ""),
    (body(1, timestamp="yesterday"), "timestamp", ""),
    (body(1, timestamp=1717243200), "timestamp", "Expected"),
    (body(1, timestamp="2025-06-01T12:05:01Z"), "timestamp", "in the future"),  # beyond the skew after sending
    (body(1, timestamp="2999-01-01T00:00:00Z"), "timestamp", "in the future"),
    (body(1, timestamp="1969-12-31T23:59:59Z"), "timestamp", "before 1970"),
    (body(1, colour="red"), "colour", "unknown field"),
    (body(1, position=0), "position", ""),
    (body(1, recommendation_id=""), "recommendation_id", ""),
    ("not json", "$", "not a JSON object"),
    ([body(1)], "$", "not a JSON object"),
])
def test_a_body_post_events_would_refuse_is_refused_naming_the_field(bad: object, field: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words) as info:
        read(bad)
    assert info.value.field == field


def test_the_future_bound_follows_the_sending_time() -> None:
    late = body(1, timestamp="2025-06-01T12:10:00Z")
    with pytest.raises(InvalidInput):
        read(late)
    assert queued_event(late, SENT + timedelta(minutes=6), SKEW).ts == datetime(2025, 6, 1, 12, 10)
