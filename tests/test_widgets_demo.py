"""Bought together and trending over HTTP against the demo's planted ground truth (complementary pairs, a
trending burst), the cart variant, the fallback, and one shopper who cannot make a product trend."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.demo import DemoShop, generate_demo
from appliance.types import now_utc
from tests.helpers import LOCAL, wait_until
from web.app import create_app

DEMO = {"products": 800, "customers": 300, "days": 7, "train": False}


@pytest.fixture(scope="module")
def demo(tmp_path_factory, encoder) -> Iterator[tuple[TestClient, DemoShop]]:
    data = tmp_path_factory.mktemp("demo") / "data"
    config = load_config(overrides={"server": {"data_dir": str(data)}, "demo": DEMO, "jobs": {"enabled": False}})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, timeout=120, what="ready")
        shop = generate_demo(config.demo.seed, DEMO["products"], DEMO["customers"], DEMO["days"], now_utc())
        yield client, shop


def _ids(answer: dict) -> list[str]:
    return [item["product"]["product_id"] for item in answer["items"]]


def _planted_pairs(shop: DemoShop, least: int) -> dict[int, int]:
    """Planted pairs that at least `least` distinct shoppers carted in one session, from the events."""
    baskets: dict[tuple[int, int], set[int]] = defaultdict(set)
    last, session = {}, defaultdict(int)
    for e in shop.events:
        if e.event_name not in ("product_added_to_cart", "product_purchased"):
            continue
        if e.customer_id in last and (e.ts - last[e.customer_id]).total_seconds() > 1800:
            session[e.customer_id] += 1
        last[e.customer_id] = e.ts
        baskets[(e.customer_id, session[e.customer_id])].add(e.product_id)
    shoppers: dict[int, set[int]] = defaultdict(set)
    for (customer, _), basket in baskets.items():
        for a in basket:
            if shop.partners.get(a) in basket:
                shoppers[a].add(customer)
    return {a: shop.partners[a] for a, who in shoppers.items() if len(who) >= least}


def test_bought_together_finds_the_planted_complementary_pairs(demo) -> None:
    client, shop = demo
    pairs = _planted_pairs(shop, least=3)
    assert len(pairs) >= 5  # the generator planted enough to check
    found = 0
    for a, b in pairs.items():
        answer = client.get(f"/products/{a}/bought-together", params={"k": 3, "explain": "true"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["product_id"] == str(a) and str(a) not in _ids(body)
        found += str(b) in _ids(body)
        for item in body["items"]:
            assert 0.0 <= item["score"] <= 1.0 and item["source"] == "bought_together"
            assert item["reason"].startswith("bought with ") and "co_purchase" in item["explain"]
    assert found >= 0.8 * len(pairs), (found, len(pairs))


def test_a_whole_cart_gets_the_partners_of_its_products_and_not_itself(demo) -> None:
    client, shop = demo
    cart = list(_planted_pairs(shop, least=3))[:2]
    answer = client.post("/recommendations/bought-together", json={"product_ids": cart, "k": 10})
    assert answer.status_code == 200, answer.text
    ids = _ids(answer.json())
    assert not set(ids) & {str(a) for a in cart}
    assert sum(str(shop.partners[a]) in ids for a in cart) >= 1
    scores = [i["score"] for i in answer.json()["items"]]
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_a_product_nobody_carted_falls_back_to_popular_complements(demo) -> None:
    client, shop = demo
    carted = {e.product_id for e in shop.events if e.event_name in ("product_added_to_cart", "product_purchased")}
    lonely = next(p for p in shop.products if p.product_id not in carted)
    body = client.get(f"/products/{lonely.product_id}/bought-together", params={"k": 5}).json()
    assert body["items"], body
    for item in body["items"]:
        assert item["source"] == "popular" and item["reason"] == f"popular in {lonely.category_path[0]}"
        assert item["product"]["category_path"][0] == lonely.category_path[0]
        assert item["product"]["category_path"] != list(lonely.category_path)  # complements, not substitutes


def test_trending_finds_the_planted_burst_and_is_not_the_popular_list(demo) -> None:
    client, shop = demo
    trending = client.get("/trending", params={"k": 10, "explain": "true"}).json()
    top = _ids(trending)[:len(shop.burst)]
    assert set(top) == {str(p) for p in shop.burst}, trending
    popular = client.get("/customers/stranger/feed", params={"per_page": 10}).json()
    assert _ids(popular) != _ids(trending)
    assert all(i["reason"].startswith("trending in ") and i["explain"]["trend_z"] > 0 for i in trending["items"])
    # per category: the burst product of one leaf trends there, and nothing from other leaves does
    burst = next(p for p in shop.products if p.product_id == shop.burst[0])
    leaf = burst.category_path[-1]
    in_leaf = client.get("/trending", params={"category": leaf}).json()
    assert _ids(in_leaf)[0] == str(burst.product_id)
    assert all(i["product"]["category_path"][-1] == leaf for i in in_leaf["items"])


def test_one_shopper_cannot_make_a_product_trend(demo) -> None:
    client, shop = demo
    quiet = next(p for p in reversed(shop.products) if p.product_id not in shop.burst and p.in_stock)
    now = now_utc()
    events = [{"customer_id": "bot-1", "product_id": quiet.product_id, "event_name": "product_viewed",
               "timestamp": (now - timedelta(seconds=i)).isoformat() + "Z"} for i in range(60)]
    assert client.post("/events", json=events).status_code == 202
    client.app.state.services.widgets.widgets.refresh()
    assert str(quiet.product_id) not in _ids(client.get("/trending", params={"k": 50}).json())
