"""The product-page and shopper widgets over HTTP on a small catalog: looking similar with the feed's filters,
related (content + co-views), recently viewed, the batch call with mixed success and error, diversity and one
score scale across sources."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.finish import diversify
from appliance.types import Pick, now_utc
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app


@pytest.fixture
def shop(tmp_path, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
        "realtime": {"receive_wait_seconds": 0.2}, "jobs": {"enabled": False},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        yield client


def _ids(answer: dict) -> list[str]:
    return [item["product"]["product_id"] for item in answer["items"]]


def _events(client: TestClient, rows: list[tuple[str, int, str]]) -> None:
    """Post these events a minute apart, in order, ending now; once the consumer has processed them (it feeds
    the recently viewed rings), rebuild the widgets' tables."""
    now = now_utc()
    body = [{"customer_id": c, "product_id": p, "event_name": n,
             "timestamp": (now - timedelta(minutes=len(rows) - i)).isoformat() + "Z"}
            for i, (c, p, n) in enumerate(rows)]
    services = client.app.state.services
    processed = services.consumer.processed
    assert client.post("/events", json=body).status_code == 202
    wait_until(lambda: services.consumer.processed >= processed + len(rows), what="the consumer")
    services.widgets.widgets.refresh()


def test_looking_similar_applies_the_filters(shop: TestClient) -> None:
    plain = shop.get("/products/1/similar", params={"k": 5}).json()
    assert plain["model"] == "looking-similar" and len(plain["items"]) == 5
    assert all(0.5 <= i["score"] <= 1.0 and i["reason"].startswith("looks like ") for i in plain["items"])
    assert shop.get("/products/1/similar", params={"max_price": 1}).json()["items"] == []
    first = _ids(plain)[0]
    assert first not in _ids(shop.get("/products/1/similar", params={"exclude": first}).json())
    cheap = shop.get("/products/1/similar", params={"max_price": 100, "k": 5}).json()
    assert cheap["items"] and all(i["product"]["price"] <= 100 for i in cheap["items"])
    audio = shop.get("/products/1/similar", params={"category": "Audio"}).json()
    assert sorted(_ids(audio)) == ["7", "8"]
    assert shop.get("/products/1/similar", params={"min_score": 1.5}).status_code == 400  # the scale is 0..1


def test_related_blends_in_what_shoppers_viewed_together(shop: TestClient) -> None:
    before = _ids(shop.get("/products/1/related", params={"k": 13}).json())
    # the jeans (12) are far from a running shoe by content; three shoppers view them together
    _events(shop, [(f"s{i}", p, "product_viewed") for i in range(3) for p in (1, 12)])
    after = shop.get("/products/1/related", params={"k": 5, "explain": "true"}).json()
    assert before.index("12") > 4 and "12" in _ids(after)
    jeans = next(i for i in after["items"] if i["product"]["product_id"] == "12")
    assert jeans["explain"]["co_view"] > 0 and jeans["reason"].startswith("viewed with ")
    assert "12" not in _ids(shop.get("/products/1/related", params={"k": 5, "category": "Shoes"}).json())


def test_recently_viewed_newest_first_without_repeats(shop: TestClient) -> None:
    _events(shop, [("amy", p, "product_viewed") for p in (3, 9, 3, 5)])
    body = shop.get("/customers/amy/recently-viewed").json()
    assert _ids(body)[:3] == ["5", "3", "9"]
    assert all(i["source"] == "recently_viewed" and 0 < i["score"] <= 1 for i in body["items"])
    assert shop.get("/customers/nobody/recently-viewed").json()["items"] == []


def test_purchases_are_left_out_of_the_shoppers_widgets(shop: TestClient) -> None:
    similar = _ids(shop.get("/products/1/similar", params={"k": 3}).json())
    _events(shop, [("bob", int(similar[0]), "product_purchased")])
    mine = _ids(shop.get("/products/1/similar", params={"k": 3, "customer_id": "bob"}).json())
    assert similar[0] not in mine and len(mine) == 3


def test_one_call_for_a_page_answers_each_request_or_gives_it_its_own_error(shop: TestClient) -> None:
    _events(shop, [("amy", 3, "product_viewed")])
    batch = shop.post("/recommendations", json={"requests": [
        {"model": "looking-similar", "product_id": 1, "k": 3},
        {"model": "related", "product_id": "no-such-product"},
        {"model": "recently-viewed", "customer_id": "amy"},
        {"model": "bought-together"},
        {"model": "feed", "customer_id": "amy", "k": 4},
        {"product_id": 1},
    ]})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["status"] for r in results] == [200, 404, 200, 422, 200, 422]
    assert len(results[0]["items"]) == 3 and _ids(results[2]) == ["3"]
    assert results[1]["error"]["detail"] == "product no-such-product does not exist"
    assert results[3]["error"]["field"] == "product_id" and results[5]["error"]["field"] == "model"
    assert len(results[4]["items"]) == 4
    # one scale: every score of every source in the answer is in 0..1
    scores = [i["score"] for r in results if r["status"] == 200 for i in r["items"]]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)
    assert shop.post("/recommendations", json={"requests": []}).status_code == 400


def test_diversity_allows_at_most_n_in_a_row_from_one_key() -> None:
    picks = [Pick(i, 1.0 - i / 10, "x", "r") for i in range(6)]
    brand = {0: "a", 1: "a", 2: "a", 3: "a", 4: "b", 5: "c"}
    out = diversify(picks, lambda p: brand[p.product_id], 2)
    assert [p.product_id for p in out] == [0, 1, 4, 2, 3, 5]
    assert [p.product_id for p in diversify(picks, lambda p: "same", 2)] == list(range(6))  # nothing else left


def test_one_shopper_cannot_make_a_product_popular_for_everyone(shop: TestClient) -> None:
    _events(shop, [(f"fan{i}", 4, "product_clicked") for i in range(5)]  # five shoppers: 5 x 2.0
            + [("bot", 13, "product_added_to_cart")] * 30)  # one shopper, 30 carts: capped at one purchase, 8.0
    shop.app.state.services.recommender.refresh_popularity()
    popular = shop.get("/customers/stranger/feed", params={"per_page": 2}).json()
    assert _ids(popular) == ["4", "13"]
