"""Attribution: recommendation ids on feeds, impressions written off the request path, /analytics counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.errors import StoreUnavailable
from appliance.types import Event, Scored
from jobs.attribution import ImpressionLog, analytics
from storage.db import Database
from storage.events import EventStore
from storage.ids import ShopIds
from storage.impressions import ImpressionStore
from tests.helpers import LOCAL, small_catalog, wait_until
from web.app import create_app

ADMIN = {"X-Admin-Key": "s3cret"}
T0 = datetime(2026, 11, 20, 12, 0, 0)


@pytest.fixture
def admin_client(tmp_path, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={"server": {"data_dir": str(tmp_path / "data"), "load_demo": False,
                                               "admin_key": "s3cret"}})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        client.post("/products", json=small_catalog())
        yield client


def _log(db, on_dropped=lambda n: None, **changes) -> ImpressionLog:
    config = load_config(overrides={"analytics": changes}).analytics
    customers = ShopIds.open(db).customers
    return ImpressionLog(ImpressionStore(db), config, lambda: T0, lambda ids: customers.keys(ids, create=True),
                         on_dropped=on_dropped)


def test_a_served_item_is_joined_to_its_later_click_cart_and_purchase(admin_client: TestClient) -> None:
    feed = admin_client.get("/customers/9/feed", params={"per_page": 5}).json()
    rid = feed["recommendation_id"]
    assert [i["position"] for i in feed["items"]] == [1, 2, 3, 4, 5]
    page2 = admin_client.get("/customers/9/feed", params={"per_page": 5, "page": 2, "feed_id": feed["feed_id"]})
    assert [i["position"] for i in page2.json()["items"]] == [6, 7, 8, 9, 10]
    assert page2.json()["recommendation_id"] != rid
    second, third = (feed["items"][k]["product"]["product_id"] for k in (1, 2))
    events = [
        # the click carries the id and position; the cart and purchase after it do not (the shop's checkout)
        {"customer_id": 9, "product_id": second, "event_name": "product_clicked", "recommendation_id": rid,
         "position": 2},
        {"customer_id": 9, "product_id": second, "event_name": "product_added_to_cart"},
        {"customer_id": 9, "product_id": second, "event_name": "product_purchased"},
        # a purchase of a shown product that was never clicked from the feed counts for nobody
        {"customer_id": 9, "product_id": third, "event_name": "product_purchased"},
        # another shopper's purchase of the clicked product does not either
        {"customer_id": 10, "product_id": second, "event_name": "product_purchased"},
    ]
    assert admin_client.post("/events", json=events).status_code == 202
    stored = admin_client.app.state.services.db.read(
        "SELECT recommendation_id, position FROM events WHERE event_name = 'product_clicked'")
    assert stored == [(rid, 2)]
    answer = admin_client.get("/analytics", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["totals"]["impressions"] == 10  # two pages of 5 (page 2 is its own recommendation)
    assert (body["totals"]["clicks"], body["totals"]["carts"], body["totals"]["purchases"]) == (1, 1, 1)
    assert body["totals"]["click_through_rate"] == pytest.approx(0.1)
    row = next(r for r in body["rows"] if r["clicks"])
    assert (row["widget"], row["source"], row["model_version"]) == ("feed", "popular", "mean")
    assert row["day"] == datetime.now(UTC).date().isoformat()
    assert row["conversion_rate"] == pytest.approx(row["purchases"] / row["impressions"])


def test_analytics_is_admin_only_and_checks_its_range(admin_client: TestClient) -> None:
    assert admin_client.get("/analytics").status_code == 401
    backwards = admin_client.get("/analytics", headers=ADMIN, params={"from": "2026-11-10", "to": "2026-11-01"})
    assert (backwards.status_code, backwards.json()["field"]) == (422, "from")
    garbled = admin_client.get("/analytics", headers=ADMIN, params={"to": "yesterday"})
    assert (garbled.status_code, garbled.json()["field"]) == (422, "to")
    empty = admin_client.get("/analytics", headers=ADMIN, params={"from": "2020-01-01", "to": "2020-01-31"})
    assert empty.json()["rows"] == [] and empty.json()["totals"]["impressions"] == 0


def test_bad_attribution_fields_are_refused(admin_client: TestClient) -> None:
    bad = {"customer_id": 1, "product_id": 2, "event_name": "product_clicked", "recommendation_id": "r",
           "position": 0}
    answer = admin_client.post("/events", json=bad)
    assert (answer.status_code, answer.json()["field"]) == (400, "position")


def test_the_attribution_window_bounds_purchases_without_an_id(db) -> None:
    impressions, events = _log(db), EventStore(db)
    rid = impressions.served("c-5", "feed", [Scored(1, 1.5, "personal"), Scored(2, 1.4, "popular")], 1, "v1")
    assert impressions.store.count() == 0  # buffered, not written on the request path
    assert impressions.flush() == 2
    (key,) = ShopIds.open(db).customers.keys(["c-5"])  # the shopper's key, created by the flush
    assert db.read("SELECT DISTINCT customer_id FROM impressions") == [(key,)]
    later = [Event(key, 1, "product_clicked", T0 + timedelta(minutes=1), rid, 1),
             Event(key, 1, "product_purchased", T0 + timedelta(hours=30))]
    events.append(later, T0)
    end = (T0 + timedelta(days=1)).isoformat()
    rows = {r.source: r for r in analytics(impressions, 24.0, "2026-11-20", end, T0).rows}
    assert (rows["personal"].clicks, rows["personal"].purchases) == (1, 0)  # 30 h after the click: outside 24 h
    assert rows["personal"].model_version == "v1" and rows["popular"].clicks == 0
    rows = {r.source: r for r in analytics(impressions, 48.0, "2026-11-20", end, T0).rows}
    assert rows["personal"].purchases == 1


def test_an_event_naming_a_product_the_recommendation_did_not_show_counts_for_nothing(db) -> None:
    impressions = _log(db)
    rid = impressions.served("5", "feed", [Scored(1, 1.0, "popular")], 1, "mean")
    EventStore(db).append([Event(5, 99, "product_purchased", T0, rid, 1)], T0)
    result = analytics(impressions, 24.0, None, None, T0 + timedelta(hours=1))
    assert result.totals()["impressions"] == 1 and result.totals()["purchases"] == 0


def test_the_buffer_is_bounded_and_drops_are_counted(db) -> None:
    dropped: list[int] = []
    impressions = _log(db, buffer_max=3, on_dropped=dropped.append)
    items = [Scored(i, 1.0, "popular") for i in (1, 2)]
    impressions.served("1", "feed", items, 1, "mean")
    impressions.served("2", "feed", items, 1, "mean")  # 4 > 3: dropped whole, the answer still has its id
    assert (impressions.buffered, dropped) == (2, [2])
    impressions.close()
    assert impressions.store.count() == 2


def test_a_failed_write_keeps_the_impressions_for_the_next_flush(tmp_path) -> None:
    db = Database(tmp_path / "closed.duckdb")
    impressions = _log(db)
    impressions.served("1", "feed", [Scored(7, 1.0, "new"), Scored(8, 1.0, "new")], 1, "mean")
    db.close()  # the store can no longer be written (as on a failing disk)
    with pytest.raises(StoreUnavailable):  # the store's word for a write it cannot make
        impressions.flush()
    assert impressions.buffered == 2


def test_the_writer_thread_flushes_without_being_asked(db) -> None:
    impressions = _log(db, flush_seconds=0.05)
    impressions.start()
    try:
        impressions.served("1", "feed", [Scored(7, 1.0, "new")], 3, "mean")
        wait_until(lambda: impressions.store.count() == 1, timeout=10, what="the background flush")
        assert db.read("SELECT position, source FROM impressions") == [(3, "new")]
    finally:
        impressions.close()


def test_erasing_a_shopper_erases_their_impressions(admin_client: TestClient) -> None:
    admin_client.get("/customers/4/feed")
    erased = admin_client.delete("/customers/4").json()
    assert erased["impressions"] == 14
    assert admin_client.app.state.services.impressions.store.count() == 0


def test_a_merged_visitor_s_impressions_follow_them_to_the_customer(admin_client: TestClient) -> None:
    admin_client.get("/customers/anon-7f3a/feed")  # a visitor, not seen before, is shown the feed
    admin_client.post("/events", json={"customer_id": "anon-7f3a", "product_id": "1", "event_name": "product_viewed"})
    merged = admin_client.post("/customers/c-1001/merge", json={"anonymous_id": "anon-7f3a"})
    assert merged.status_code == 200, merged.text
    assert admin_client.delete("/customers/c-1001").json()["impressions"] == 14
    assert admin_client.app.state.services.impressions.store.count() == 0
