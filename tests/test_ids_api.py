"""The shop's own ids over real HTTP: products, events, feed (exclude=), similar, erase, merge, bad ids."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app

# StockCodes as the UCI retail data has them; one product keeps an integer id (sent as a JSON number).
CODES = ["85123A", "71053", "84406B", "84029G", "84029E", "22752", "21730", "22633", "22632", "84879", "22745",
         "22748", "22749", 22310]
RUNNING = [str(c) for c in CODES[:5]]  # the running shoes of small_catalog()
SNEAKERS = [str(c) for c in CODES[:6]]  # and its basketball shoe


@pytest.fixture
def shop(tmp_path, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
        "realtime": {"receive_wait_seconds": 0.2},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        catalog = [{**p, "product_id": code} for p, code in zip(small_catalog(), CODES, strict=True)]
        assert client.post("/products", json=catalog).status_code == 202
        wait_embedded(client)
        yield client


def _services(client: TestClient):
    return client.app.state.services


def _click(client: TestClient, customer, products, name: str = "product_clicked") -> None:
    processed = client.get("/queue").json()["processed"]
    events = [{"customer_id": customer, "product_id": p, "event_name": name} for p in products]
    assert client.post("/events", json=events).status_code == 202
    wait_until(lambda: (q := client.get("/queue").json())["processed"] >= processed + 1
               and q["depth"] == 0 and q["in_flight"] == 0, what="the consumer")  # every message, not only one


def _ids(feed: dict) -> list[str]:
    return [item["product"]["product_id"] for item in feed["items"]]


def test_string_ids_through_products_events_feed_and_similar(shop: TestClient) -> None:
    got = shop.get("/products/85123A").json()
    assert got["product"]["product_id"] == "85123A" and got["embedded"]
    assert shop.get("/products/22310").json()["product"]["product_id"] == "22310"  # sent as 22310
    assert shop.get("/products/85123B").status_code == 404
    put = shop.put("/products/SKU-éa.1", json={"name": "Trail Runner", "category_path": ["Shoes", "Sneakers"]})
    assert put.status_code == 201 and put.json()["product"]["product_id"] == "SKU-éa.1"

    similar = shop.get("/products/85123A/similar", params={"k": 3}).json()
    assert similar["product_id"] == "85123A"
    assert len(similar["items"]) == 3 and set(_ids(similar)) <= set(SNEAKERS) | {"SKU-éa.1"}
    assert shop.get("/products/nope/similar").status_code == 404

    _click(shop, "anon-7f3a", RUNNING[:3])
    feed = shop.get("/customers/anon-7f3a/feed", params={"per_page": 5}).json()
    assert feed["customer_id"] == "anon-7f3a" and feed["personalized"]
    assert all(isinstance(i, str) for i in _ids(feed))
    assert set(_ids(feed)) & set(RUNNING)

    excluded = shop.get("/customers/anon-7f3a/feed", params={"per_page": 20, "exclude": f"{RUNNING[0]},22310",
                                                             "category": "Shoes"}).json()
    assert excluded["total"] > 0 and not {RUNNING[0], "22310"} & set(_ids(excluded))
    both = shop.get("/customers/anon-7f3a/feed", params=[("exclude", RUNNING[1]), ("exclude", "unknown-1")]).json()
    assert RUNNING[1] not in _ids(both) and both["total"] == 14  # 15 products, one left out, unknown ignored

    unknown = shop.get("/customers/never-seen/feed").json()
    assert (unknown["customer_id"], unknown["personalized"]) == ("never-seen", False)
    assert _services(shop).ids.customers.key("never-seen") is None  # reading a feed creates no id


def test_integer_and_string_ids_are_the_same_shopper_and_product(shop: TestClient) -> None:
    _click(shop, 12345, [22310, "85123A"])
    _click(shop, "12345", ["22310"], "product_purchased")
    services = _services(shop)
    key = services.ids.customers.key("12345")
    assert key is not None and len(services.ids.customers) == 1
    rows = services.db.read("SELECT DISTINCT product_id FROM events WHERE customer_id = ? ORDER BY 1", [key])
    assert [r[0] for r in rows] == sorted(services.ids.products.keys(["22310", "85123A"]))
    for who in ("12345", 12345):
        feed = shop.get(f"/customers/{who}/feed", params={"per_page": 20}).json()
        assert feed["customer_id"] == "12345" and feed["personalized"]
        assert "22310" not in _ids(feed)  # bought: left out of the feed, whichever way the id was written
    body = services.queue.dead_letters()
    assert body == []


@pytest.mark.parametrize("event, field", [
    ({"customer_id": 1.5, "product_id": "85123A"}, "customer_id"),
    ({"customer_id": True, "product_id": "85123A"}, "customer_id"),
    ({"customer_id": "", "product_id": "85123A"}, "customer_id"),
    ({"customer_id": "x" * 129, "product_id": "85123A"}, "customer_id"),
    ({"customer_id": "anon 7f3a", "product_id": "85123A"}, "customer_id"),
    ({"customer_id": "anon-1", "product_id": "a/b"}, "product_id"),
    ({"customer_id": "anon-1", "product_id": "85123A\n"}, "product_id"),
    ({"customer_id": "anon-1", "product_id": None}, "product_id"),
])
def test_bad_ids_get_a_problem_naming_the_field_and_nothing_is_written(shop: TestClient, event, field) -> None:
    services = _services(shop)
    counts = (services.events.count(), len(services.ids.customers), len(services.ids.products))
    good = {"customer_id": "anon-ok", "product_id": "85123A", "event_name": "product_viewed"}
    answer = shop.post("/events", json=[good, {**event, "event_name": "product_viewed"}])
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["field"] == f"[1].{field}"
    assert (services.events.count(), len(services.ids.customers), len(services.ids.products)) == counts


def test_bad_ids_in_paths_queries_and_product_bodies(shop: TestClient) -> None:
    services = _services(shop)
    products = len(services.ids.products)
    for path, field in [("/customers/a%20b/feed", "customer_id"), (f"/customers/{'x' * 129}/feed", "customer_id"),
                        ("/products/a%09b", "product_id"), ("/products/a%20b/similar", "product_id")]:
        answer = shop.get(path)
        assert answer.status_code == 400 and answer.json()["field"] == field, (path, answer.text)
    answer = shop.get("/customers/anon-1/feed", params={"exclude": "ok,bad id"})
    assert answer.status_code == 422 and answer.json()["field"] == "exclude"
    bulk = shop.post("/products", json=[{**small_catalog()[0], "product_id": 2.5}])
    assert bulk.status_code == 400 and bulk.json()["field"] == "[0].product_id"
    first, second = small_catalog()[:2]
    dup = shop.post("/products", json=[{**first, "product_id": 7}, {**second, "product_id": "7"}])
    assert dup.status_code == 422 and dup.json()["field"] == "product_id"  # 7 and "7" are one product
    put = shop.put("/products/a%20b", json={"name": "X", "category_path": ["Y"]})
    assert put.status_code == 400 and put.json()["field"] == "product_id"
    assert len(services.ids.products) == products


def test_erase_forgets_the_id(shop: TestClient) -> None:
    _click(shop, "anon-7f3a", RUNNING[:2])
    services = _services(shop)
    assert shop.get("/customers/anon-7f3a/feed").json()["personalized"]
    erased = shop.delete("/customers/anon-7f3a").json()
    shown = erased.pop("impressions")  # the feed above, as recorded
    assert erased == {"customer_id": "anon-7f3a", "events": 2, "queued_messages": 0, "vectors": 1} and shown > 0
    assert services.ids.customers.key("anon-7f3a") is None
    assert not shop.get("/customers/anon-7f3a/feed").json()["personalized"]  # recorded: the id is in use again
    again = shop.delete("/customers/anon-7f3a").json()
    assert again == {"customer_id": "anon-7f3a", "events": 0, "queued_messages": 0, "vectors": 0,
                     "impressions": again["impressions"]}


def test_merge_an_anonymous_visitor_who_logs_in(shop: TestClient) -> None:
    _click(shop, "anon-7f3a", RUNNING[:3])
    _click(shop, "anon-7f3a", [RUNNING[3]], "product_purchased")
    services = _services(shop)
    anonymous = services.ids.customers.key("anon-7f3a")
    assert services.users.get(anonymous) is not None

    merged = shop.post("/customers/c-1001/merge", json={"anonymous_id": "anon-7f3a"})
    assert merged.status_code == 200, merged.text
    assert merged.json() == {"customer_id": "c-1001", "anonymous_id": "anon-7f3a", "events": 4, "purchases": 1,
                             "queued_messages": 0, "vectors": 1, "vector": "mean"}
    assert services.ids.customers.key("anon-7f3a") is None
    assert services.users.get(anonymous) is None
    feed = shop.get("/customers/c-1001/feed", params={"per_page": 20}).json()
    assert feed["personalized"] and RUNNING[3] not in _ids(feed)  # the purchase moved with the events
    assert not shop.get("/customers/anon-7f3a/feed").json()["personalized"]

    again = shop.post("/customers/c-1001/merge", json={"anonymous_id": "anon-7f3a"})
    assert again.status_code == 200 and (again.json()["events"], again.json()["vectors"]) == (0, 0)
    assert services.db.read("SELECT count(*) FROM events WHERE customer_id = ?",
                            [services.ids.customers.key("c-1001")])[0][0] == 4

    for body in ({"anonymous_id": "c-1001"}, {"anonymous_id": 1.5}, {"anonymous_id": "a b"}, {}):
        bad = shop.post("/customers/c-1001/merge", json=body)
        assert 400 <= bad.status_code < 500 and bad.json()["field"] == "anonymous_id", (body, bad.text)
    numeric = shop.post("/customers/1001/merge", json={"anonymous_id": 1001})  # 1001 is "1001": itself
    assert numeric.status_code == 422 and numeric.json()["field"] == "anonymous_id"
    operation = shop.get("/schema/openapi.json").json()["paths"]["/customers/{customer_id}/merge"]["post"]
    assert operation["operationId"] == "mergeCustomer" and operation["requestBody"]["required"]
