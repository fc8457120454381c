"""Events and the default feed over real HTTP."""

from datetime import UTC, datetime, timedelta

from litestar.testing import TestClient

from tests.helpers import small_catalog


def _ids(feed: dict) -> list[int]:
    """The products of a feed page by their (numeric) shop ids; answers show every id as a string."""
    assert all(isinstance(item["product"]["product_id"], str) for item in feed["items"])
    return [int(item["product"]["product_id"]) for item in feed["items"]]


def test_events_are_on_disk_before_the_202(client: TestClient) -> None:
    one = client.post("/events", json={"customer_id": 12345, "product_id": 5678, "event_name": "product_clicked"})
    assert one.status_code == 202, one.text
    assert one.json()["accepted"] == 1
    batch = [{"customer_id": 1, "product_id": 2, "event_name": name} for name in
             ("product_viewed", "product_added_to_cart", "product_favorited", "product_shared", "product_purchased")]
    assert client.post("/events", json=batch).json()["accepted"] == 5
    services = client.app.state.services
    stored = services.db.read(
        """SELECT c.ext, p.ext, event_name FROM events JOIN customer_ids c ON customer_id = c.key
           JOIN product_ids p ON product_id = p.key ORDER BY event_id""")
    assert stored[0] == ("12345", "5678", "product_clicked")
    assert [r[2] for r in stored[1:]] == [b["event_name"] for b in batch]


def test_bad_events_are_refused_whole_and_nothing_is_written(client: TestClient) -> None:
    bad = [{"customer_id": 1, "product_id": 2, "event_name": "product_viewed"},
           {"customer_id": 1, "product_id": 2, "event_name": "product_licked"}]
    answer = client.post("/events", json=bad)
    assert answer.status_code == 400
    assert answer.json()["field"] == "[1].event_name"
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    late = client.post("/events", json={"customer_id": 1, "product_id": 2, "event_name": "product_viewed",
                                        "timestamp": future})
    assert late.status_code == 422
    assert late.json()["field"] == "timestamp"
    assert client.app.state.services.events.count() == 0


def test_default_feed_is_popularity_then_recency_and_pages_cleanly(client: TestClient) -> None:
    client.post("/products", json=small_catalog())
    now = datetime.now(UTC)
    events = [{"customer_id": 9, "product_id": 11, "event_name": "product_added_to_cart"},  # 5.0
              {"customer_id": 9, "product_id": 3, "event_name": "product_clicked"},  # 2.0
              {"customer_id": 8, "product_id": 3, "event_name": "product_viewed"},  # 2.1 in all
              # an old cart counts less than a fresh click: 5.0 / 2^(240/72) = 0.5
              {"customer_id": 8, "product_id": 7, "event_name": "product_added_to_cart",
               "timestamp": (now - timedelta(hours=240)).isoformat()}]
    client.post("/events", json=events)
    client.app.state.services.recommender.refresh_popularity()
    page1 = client.get("/customers/77/feed", params={"per_page": 5}).json()
    assert page1["ordering"] == "popular"
    assert _ids(page1)[:3] == [11, 3, 7]
    assert page1["items"][0]["score"] > page1["items"][1]["score"] > page1["items"][2]["score"]
    # the rest have no events: newest product first (created_at is 2026-01-<id>)
    assert _ids(page1)[3:] == [14, 13]
    page2 = client.get("/customers/77/feed", params={"per_page": 5, "page": 2}).json()
    page3 = client.get("/customers/77/feed", params={"per_page": 5, "page": 3}).json()
    everything = _ids(page1) + _ids(page2) + _ids(page3)
    assert sorted(everything) == list(range(1, 15))
    assert (page1["total"], page1["pages"], len(page3["items"])) == (14, 3, 4)


def test_price_sort_overrides_and_filters_apply(client: TestClient) -> None:
    client.post("/products", json=small_catalog())
    ascending = client.get("/customers/1/feed", params={"sort": "price_asc", "per_page": 100}).json()
    prices = [i["product"]["price"] for i in ascending["items"]]
    assert prices == sorted(prices) and ascending["ordering"] == "price_asc"
    descending = client.get("/customers/1/feed", params={"sort": "price_desc", "per_page": 3}).json()
    assert [i["product"]["price"] for i in descending["items"]] == [399.0, 320.0, 279.0]
    running = client.get("/customers/1/feed", params={"category": "running", "max_price": 150}).json()
    assert sorted(_ids(running)) == [1, 5]
    several = client.get("/customers/1/feed", params=[("category", "Basketball"), ("category", "Jeans,Lego")]).json()
    assert sorted(_ids(several)) == [6, 11, 12]
    excluded = client.get("/customers/1/feed", params={"category": "Running", "exclude": "1,2"}).json()
    assert sorted(_ids(excluded)) == [3, 4, 5]


def test_bad_feed_parameters_are_problems(client: TestClient) -> None:
    assert client.get("/customers/1/feed", params={"sort": "cheapest"}).json()["field"] == "sort"
    wrong = client.get("/customers/1/feed", params={"min_price": 50, "max_price": 10})
    assert (wrong.status_code, wrong.json()["field"]) == (422, "min_price")
    assert client.get("/customers/a%20b/feed").status_code == 400
    disabled = client.get("/customers/1/feed", params={"backend": "elasticsearch"})
    assert (disabled.status_code, disabled.json()["field"]) == (422, "backend")
    assert client.get("/sync").json()["enabled"] is False


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/health/live").json()["status"] == "live"
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["products"] == 0
    schema = client.get("/schema/openapi.json").json()
    assert {"/products/{product_id}", "/events", "/customers/{customer_id}/feed"} <= set(schema["paths"])
    assert client.get("/schema/docs").status_code == 200
