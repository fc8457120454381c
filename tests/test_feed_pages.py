"""Finished first pages answered again (jobs/feed_pages.py): never stale after an edit of one of their items."""

from pathlib import Path

import pytest
from litestar.testing import TestClient

from appliance.config import Config, load_config
from tests.helpers import small_catalog, wait_embedded, wait_until

ADMIN = {"X-Admin-Key": "s3cret"}


@pytest.fixture
def config(tmp_path: Path) -> Config:  # the `client` fixture's app, with an admin key for the rules
    return load_config(overrides={"server": {"data_dir": str(tmp_path / "data"), "load_demo": False,
                                             "admin_key": "s3cret"}})


def _ids(feed: dict) -> list[str]:
    return [item["product"]["product_id"] for item in feed["items"]]


def _shop(client: TestClient) -> None:
    assert client.post("/products", json=small_catalog()).status_code == 202
    wait_embedded(client)
    events = [{"customer_id": 9, "product_id": 11, "event_name": "product_added_to_cart"},
              {"customer_id": 9, "product_id": 3, "event_name": "product_clicked"},
              {"customer_id": 8, "product_id": 7, "event_name": "product_clicked"}]
    assert client.post("/events", json=events).status_code == 202
    client.app.state.services.recommender.refresh_popularity()


def _product(client: TestClient, pid: str, **changes) -> dict:
    stored = client.get(f"/products/{pid}").json()["product"]
    body = {k: stored[k] for k in ("name", "merchant", "category_path", "color", "price", "in_stock", "created_at")}
    return {**body, **changes}


def test_a_repeated_page_is_the_same_page_under_a_new_feed_id_that_pages_on(client: TestClient) -> None:
    _shop(client)
    pages = client.app.state.services.feeds.pages
    first = client.get("/customers/77/feed", params={"per_page": 5}).json()
    hits = pages.hits
    again = client.get("/customers/78/feed", params={"per_page": 5}).json()  # another visitor: the same popular page
    assert pages.hits == hits + 1
    assert again["customer_id"] == "78" and again["items"] == first["items"] and again["total"] == first["total"]
    assert again["feed_id"] != first["feed_id"] and again["recommendation_id"] != first["recommendation_id"]
    rest = [client.get("/customers/78/feed", params={"per_page": 5, "page": n, "feed_id": again["feed_id"]}).json()
            for n in (2, 3)]
    seen = _ids(again) + [pid for page in rest for pid in _ids(page)]
    assert len(seen) == len(set(seen)) == again["total"] == 14


def test_an_edit_of_an_item_on_a_cached_page_is_never_served_from_it(client: TestClient) -> None:
    _shop(client)
    first = client.get("/customers/77/feed", params={"per_page": 5}).json()
    top = _ids(first)[0]
    assert first["items"][0]["product"]["in_stock"]
    assert client.put(f"/products/{top}", json=_product(client, top, in_stock=False)).status_code == 200
    after = client.get("/customers/77/feed", params={"per_page": 5}).json()
    assert _ids(after)[0] == top and after["items"][0]["product"]["in_stock"] is False  # not the cached item
    # hidden by a rule: off the page at once
    assert client.post("/rules", json={"kind": "hide", "product_id": top}, headers=ADMIN).status_code == 201
    hidden = client.get("/customers/77/feed", params={"per_page": 5}).json()
    assert top not in _ids(hidden) and hidden["total"] == first["total"] - 1
    # deleted: off the page and out of the total
    second = _ids(hidden)[0]
    assert client.delete(f"/products/{second}").status_code == 204
    deleted = client.get("/customers/77/feed", params={"per_page": 5}).json()
    assert second not in _ids(deleted) and deleted["total"] == first["total"] - 2


def test_a_filtered_page_follows_an_edit_of_a_product_not_on_it(client: TestClient) -> None:
    _shop(client)
    assert client.put("/products/12", json=_product(client, "12", in_stock=False)).status_code == 200
    before = client.get("/customers/77/feed", params={"in_stock": "true", "per_page": 100}).json()
    assert "12" not in _ids(before)
    assert client.put("/products/12", json=_product(client, "12", in_stock=True)).status_code == 200
    after = client.get("/customers/77/feed", params={"in_stock": "true", "per_page": 100}).json()
    assert "12" in _ids(after) and after["total"] == before["total"] + 1


def test_a_new_vector_makes_a_new_page(client: TestClient) -> None:
    _shop(client)
    services = client.app.state.services
    assert client.post("/events", json={"customer_id": 500, "product_id": 1, "event_name": "product_clicked"}
                       ).status_code == 202
    wait_until(lambda: client.get("/customers/500/feed").json()["personalized"], what="a vector")
    first = client.get("/customers/500/feed", params={"per_page": 5}).json()
    hits = services.feeds.pages.hits
    assert client.get("/customers/500/feed", params={"per_page": 5}).json()["items"] == first["items"]
    assert services.feeds.pages.hits == hits + 1
    known = services.users.cached(services.ids.customers.key("500"))[1]
    assert client.post("/events", json={"customer_id": 500, "product_id": 9, "event_name": "product_added_to_cart"}
                       ).status_code == 202
    key = services.ids.customers.key("500")
    wait_until(lambda: services.users.cached(key)[1] is not known, what="the new vector")
    wait_until(lambda: services.recommender.knows(services.feeds.personal(key)), what="its nearest products")
    after = client.get("/customers/500/feed", params={"per_page": 5}).json()
    assert services.feeds.pages.hits == hits + 1  # computed anew from the new vector
    assert after["personalized"] and after["items"] != first["items"]
