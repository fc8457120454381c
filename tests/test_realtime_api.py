"""End to end through HTTP: events -> durable queue -> consumer -> user vector -> personalised feed."""

import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.demo import generate_demo
from appliance.tower import UserTower
from appliance.types import now_utc
from tests.helpers import LOCAL, wait_embedded, wait_until
from web.app import create_app

WINDOW_HOURS = 4.0 / 3600  # a 4-second serving window, so the test can watch it pass


@pytest.fixture(scope="module")
def shop():
    return generate_demo(seed=3, n_products=240, n_customers=0, days=1, end=now_utc())


@pytest.fixture
def app_client(tmp_path, encoder, shop) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False, "admin_key": "k"},
        "realtime": {"history_window_hours": WINDOW_HOURS, "receive_wait_seconds": 0.2},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        products = [
            {"product_id": p.product_id, "name": p.name, "merchant": p.merchant,
             "category_path": list(p.category_path), "color": p.color, "price": p.price,
             "in_stock": p.in_stock, "created_at": p.created_at.isoformat() + "Z"}
            for p in shop.products
        ]
        assert client.post("/products", json=products).status_code == 202
        wait_embedded(client)
        yield client


def _drained(client: TestClient, processed: int) -> bool:
    q = client.get("/queue").json()
    return q["depth"] == 0 and q["in_flight"] == 0 and q["processed"] >= processed


def _sneakers(shop) -> list[int]:
    return [p.product_id for p in shop.products if p.category_path[:2] == ("Shoes", "Sneakers")]


def test_clicks_on_sneakers_make_the_next_page_sneakers(app_client: TestClient, shop) -> None:
    client = app_client
    running = _sneakers(shop)
    assert len(running) >= 8, "the seeded shop must hold sneakers"
    before = client.get("/customers/501/feed", params={"per_page": 10}).json()
    assert (before["ordering"], before["personalized"]) == ("popular", False)

    events = [{"customer_id": 501, "product_id": pid, "event_name": name}
              for pid, name in zip(running[:4], ["product_clicked", "product_added_to_cart"] * 2, strict=True)]
    assert client.post("/events", json=events).status_code == 202
    wait_until(lambda: _drained(client, 1), what="the consumer")

    after = client.get("/customers/501/feed", params={"per_page": 10}).json()
    assert after["personalized"] and after["ordering"] == "personal"
    paths = [item["product"]["category_path"] for item in after["items"]]
    share = sum(p[:2] == ["Shoes", "Sneakers"] for p in paths) / len(paths)
    assert share >= 0.5, paths
    assert {item["source"] for item in after["items"]} <= {"personal", "popular", "new"}
    assert client.get("/model").json()["version"] == "mean"  # no tower yet: the fallback says so

    # The window passes with no new events: the shopper is back on the default feed.
    time.sleep(WINDOW_HOURS * 3600 + 0.5)
    later = client.get("/customers/501/feed", params={"per_page": 10}).json()
    assert (later["ordering"], later["personalized"]) == ("popular", False)


def test_pages_of_one_feed_id_never_repeat_or_skip(app_client: TestClient, shop) -> None:
    client = app_client
    running = _sneakers(shop)
    client.post("/events", json={"customer_id": 502, "product_id": running[0], "event_name": "product_clicked"})
    wait_until(lambda: _drained(client, 1), what="the consumer")
    first = client.get("/customers/502/feed", params={"per_page": 25}).json()
    assert first["personalized"]
    seen = [i["product"]["product_id"] for i in first["items"]]
    # a new click between pages does not reshuffle the feed the shopper is paging through
    client.post("/events", json={"customer_id": 502, "product_id": running[1], "event_name": "product_clicked"})
    for page in range(2, first["pages"] + 1):
        nxt = client.get("/customers/502/feed", params={"per_page": 25, "page": page, "feed_id": first["feed_id"]})
        seen += [i["product"]["product_id"] for i in nxt.json()["items"]]
    assert len(seen) == len(set(seen)) == first["total"] == len(shop.products)


def test_unknown_product_goes_to_the_dead_letter_queue_and_the_event_is_kept(app_client: TestClient) -> None:
    client = app_client
    assert client.post("/events", json={"customer_id": 503, "product_id": 999999,
                                        "event_name": "product_viewed"}).status_code == 202
    wait_until(lambda: client.get("/queue").json()["dead_lettered"] == 1, what="dead letter")
    dead = client.get("/queue/dead-letter").json()
    assert dead[0]["body"]["product_id"] == "999999" and dead[0]["reason"] == "unknown product 999999"
    services = client.app.state.services
    shopper = services.ids.customers.key("503")
    assert services.db.read("SELECT count(*) FROM events WHERE customer_id = ?", [shopper])[0][0] == 1
    assert not client.get("/customers/503/feed").json()["personalized"]
    assert client.post("/queue/dead-letter/redrive", headers={"X-Admin-Key": "k"}).json() == {"moved": 1}


def test_erasing_a_customer_removes_events_messages_and_vector(app_client: TestClient, shop) -> None:
    client = app_client
    pid = shop.products[0].product_id
    client.post("/events", json=[{"customer_id": 504, "product_id": pid, "event_name": "product_clicked"}] * 3)
    wait_until(lambda: _drained(client, 1), what="the consumer")
    assert client.get("/customers/504/feed").json()["personalized"]
    erased = client.delete("/customers/504")
    assert erased.status_code == 200
    assert erased.json() == {"customer_id": "504", "events": 3, "queued_messages": 0, "vectors": 1,
                             "impressions": 20}
    assert not client.get("/customers/504/feed").json()["personalized"]
    assert client.delete("/customers/504").json()["events"] == 0


def test_purchased_products_leave_the_feed_and_filters_apply(app_client: TestClient, shop) -> None:
    client = app_client
    sneakers = _sneakers(shop)
    client.post("/events", json=[{"customer_id": 505, "product_id": sneakers[0], "event_name": "product_clicked"},
                                 {"customer_id": 505, "product_id": sneakers[1], "event_name": "product_purchased"}])
    wait_until(lambda: _drained(client, 1), what="the consumer")
    feed = client.get("/customers/505/feed", params={"per_page": 100}).json()
    ids = [int(i["product"]["product_id"]) for i in feed["items"]]
    assert feed["personalized"] and sneakers[1] not in ids and sneakers[0] in ids
    assert feed["total"] == len(shop.products) - 1
    narrowed = client.get("/customers/505/feed", params={"per_page": 100, "category": "Sneakers",
                                                         "exclude": str(sneakers[0]), "min_score": 0.75}).json()
    got = {int(i["product"]["product_id"]) for i in narrowed["items"]}
    assert got and got <= set(sneakers) - {sneakers[0], sneakers[1]}
    assert all(i["score"] >= 0.75 for i in narrowed["items"])  # every source, on the 0..1 scale


def test_the_serving_towers_popularity_prior_orders_the_personal_products(app_client: TestClient, shop) -> None:
    client = app_client
    services = client.app.state.services
    running = _sneakers(shop)
    popular = running[5]
    events = [{"customer_id": 601, "product_id": running[0], "event_name": "product_clicked"}]
    events += [{"customer_id": 700 + i, "product_id": popular, "event_name": "product_added_to_cart"} for i in range(9)]
    assert client.post("/events", json=events).status_code == 202
    wait_until(lambda: _drained(client, 10), what="the consumer")
    services.recommender.refresh_popularity()

    def personal_items() -> list[dict]:
        page = client.get("/customers/601/feed", params={"per_page": 60}).json()
        return [item for item in page["items"] if item["source"] == "personal"]

    plain = personal_items()  # the mean-vector fallback has no prior: nearest first
    assert [i["score"] for i in plain] == sorted((i["score"] for i in plain), reverse=True)
    assert plain[0]["product"]["product_id"] != str(popular)

    tower = UserTower(services.config.tower, services.config.encoder.dim)
    with torch.no_grad():
        tower.popularity_weight.fill_(0.5)
    services.serving.set(tower, "prior-test", {"training": {"prior_half_life_hours": 240.0}})
    services.recommender.refresh_popularity()  # the popularity job: the prior's list with the tower's half-life
    ids, trained = services.events.popularity(now_utc(), 240.0, services.config.events.weights)
    prior = dict(zip(ids.tolist(), np.log1p(trained).tolist(), strict=True))
    ranked = personal_items()
    keys = [services.ids.products.key(i["product"]["product_id"]) for i in ranked]
    key = [2 * i["score"] - 1.0 + 0.5 * prior.get(k, 0.0) for i, k in zip(ranked, keys, strict=True)]
    assert key == sorted(key, reverse=True)  # score stays the similarity; the order adds the prior
    assert ranked[0]["product"]["product_id"] == str(popular)
