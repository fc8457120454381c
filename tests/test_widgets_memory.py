"""Widgets answered from memory, over real HTTP on a real store: trending categories (a rising category trends,
a steady big one does not), recently viewed fed by the consumer and warmed at start-up (not read per request),
erased and merged with the shopper, and a page's answers equal to the single widgets'."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import TestClient

from appliance.catalog_view import CatalogView
from appliance.config import load_config
from appliance.finish import Finish, finish
from appliance.pipeline import FeedQuery
from appliance.recently_viewed import ViewRing
from appliance.rules import Rule
from appliance.types import Event, Pick, now_utc
from jobs.widget_memory import Moment
from jobs.widgets import head_of
from tests.helpers import LOCAL, product, small_catalog, wait_embedded, wait_until
from web.app import create_app


@contextmanager
def _app(data: Path, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(data), "load_demo": False},
        "realtime": {"receive_wait_seconds": 0.2}, "jobs": {"enabled": False},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        wait_until(lambda: client.app.state.services.widgets.recent.ring.ready, what="recently viewed warm-up")
        yield client


@pytest.fixture
def data(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def shop(data, encoder) -> Iterator[TestClient]:
    with _app(data, encoder) as client:
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        yield client


def _ids(answer: dict) -> list[str]:
    return [item["product"]["product_id"] for item in answer["items"]]


def _post(client: TestClient, rows: list[tuple[str, int, str, timedelta]]) -> None:
    """Post events (customer, product, name, age) and wait until the consumer has processed them."""
    now = now_utc()
    services = client.app.state.services
    processed = services.consumer.processed
    body = [{"customer_id": c, "product_id": p, "event_name": n, "timestamp": (now - age).isoformat() + "Z"}
            for c, p, n, age in rows]
    assert client.post("/events", json=body).status_code == 202, body
    wait_until(lambda: services.consumer.processed >= processed + len(rows), what="the consumer")


def test_a_rising_category_trends_and_a_steady_big_one_does_not(shop: TestClient) -> None:
    steady = [(f"runner{s}-{d}", 1 + (s % 5), "product_viewed", timedelta(days=d, hours=2))
              for d in range(8) for s in range(6)]  # Running shoes: 6 shoppers a day, every day of the week
    rising = [(f"listener{s}", 7 + s % 2, "product_viewed", timedelta(hours=1 + s)) for s in range(6)]  # Audio: new
    _post(shop, steady + rising)
    shop.app.state.services.widgets.widgets.refresh()

    body = shop.get("/trending/categories", params={"explain": "true", "k": 20}).json()
    assert body["model"] == "trending-categories"
    paths = [tuple(i["path"]) for i in body["items"]]
    assert ("Electronics", "Audio") in paths and ("Electronics",) in paths
    assert not any(p[0] == "Shoes" for p in paths)  # big, but no bigger than its own baseline
    audio = next(i for i in body["items"] if i["path"] == ["Electronics", "Audio"])
    assert audio["category"] == "Audio" and audio["reason"] == "trending in Electronics"
    assert audio["explain"]["shoppers"] == 6 and audio["explain"]["expected"] == 0.0 and 0 < audio["score"] < 1
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # the same measure as trending products: the audio products trend, the running shoes do not
    trending = _ids(shop.get("/trending", params={"k": 20}).json())
    assert {"7", "8"} <= set(trending) and not {"1", "2", "3", "4", "5"} & set(trending)

    under = shop.get("/trending/categories", params={"category": "electronics"}).json()
    assert [i["path"] for i in under["items"]][0] == ["Electronics", "Audio"] and under["category"] == "electronics"
    assert all(i["path"][0] == "Electronics" and len(i["path"]) > 1 for i in under["items"])
    assert "explain" not in under["items"][0]
    shop.app.state.services.widgets.rules.add(Rule("hide", category="Audio"), now_utc())  # (HTTP: test_rules_api)
    hidden = [i["path"] for i in shop.get("/trending/categories").json()["items"]]
    assert ["Electronics", "Audio"] not in hidden and ["Electronics"] in hidden
    assert shop.get("/trending/categories", params={"k": 0}).status_code == 400


def test_recently_viewed_comes_from_memory_fed_by_the_consumer_and_survives_a_restart(data, encoder) -> None:
    with _app(data, encoder) as client:
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        _post(client, [("amy", p, "product_viewed", timedelta(minutes=10 - i)) for i, p in enumerate((3, 9, 3, 5))])
        assert _ids(client.get("/customers/amy/recently-viewed").json()) == ["5", "3", "9"]
        services = client.app.state.services
        # A view written straight into DuckDB (not through the queue): the answer does not read DuckDB, so it
        # does not show it; the consumer's events do.
        amy = services.ids.customers.key("amy")
        services.events.append([Event(amy, services.ids.products.key("12"), "product_viewed", now_utc())], now_utc())
        assert _ids(client.get("/customers/amy/recently-viewed").json()) == ["5", "3", "9"]
        _post(client, [("amy", 1, "product_clicked", timedelta(0)), ("amy", 4, "product_purchased", timedelta(0))])
        assert _ids(client.get("/customers/amy/recently-viewed").json()) == ["1", "5", "3", "9"]
    with _app(data, encoder) as client:  # a restart: the rings are warmed from DuckDB, the direct write included
        assert _ids(client.get("/customers/amy/recently-viewed").json()) == ["1", "12", "5", "3", "9"]
        assert client.delete("/customers/amy").status_code == 200
        assert client.get("/customers/amy/recently-viewed").json()["items"] == []
    with _app(data, encoder) as client:
        assert client.get("/customers/amy/recently-viewed").json()["items"] == []


def test_a_merge_brings_the_anonymous_views_to_the_customer(shop: TestClient) -> None:
    _post(shop, [("anon-7", 2, "product_viewed", timedelta(minutes=5)), ("bob", 8, "product_viewed",
                                                                          timedelta(minutes=3))])
    assert shop.post("/customers/bob/merge", json={"anonymous_id": "anon-7"}).status_code == 200
    assert _ids(shop.get("/customers/bob/recently-viewed").json()) == ["8", "2"]
    assert shop.get("/customers/anon-7/recently-viewed").json()["items"] == []


def test_a_page_answers_as_the_single_widgets_do(shop: TestClient) -> None:
    _post(shop, [(f"s{i}", p, "product_viewed", timedelta(minutes=30 - p)) for i in range(3) for p in (1, 12, 7)]
          + [(f"s{i}", p, "product_added_to_cart", timedelta(minutes=5)) for i in range(3) for p in (1, 14)])
    shop.app.state.services.widgets.widgets.refresh()
    singles = {
        "related": shop.get("/products/1/related", params={"k": 4, "customer_id": "s1"}).json(),
        "looking-similar": shop.get("/products/2/similar", params={"k": 3, "category": "Shoes"}).json(),
        "bought-together": shop.post("/recommendations/bought-together",
                                     json={"product_ids": [1, 9], "k": 3}).json(),
        "trending": shop.get("/trending", params={"k": 5}).json(),
        "recently-viewed": shop.get("/customers/s2/recently-viewed", params={"k": 2}).json(),
    }
    page = shop.post("/recommendations", json={"requests": [
        {"model": "related", "product_id": 1, "k": 4, "customer_id": "s1"},
        {"model": "looking-similar", "product_id": 2, "k": 3, "category": ["Shoes"]},
        {"model": "bought-together", "product_ids": [1, 9], "k": 3},
        {"model": "trending", "k": 5},
        {"model": "recently-viewed", "customer_id": "s2", "k": 2},
    ]}).json()["results"]
    assert [r["status"] for r in page] == [200] * 5
    for result in page:
        single = singles[result["model"]]["items"]
        if result["model"] == "recently-viewed":  # its scores decay by the second: the same items, the same order
            assert [i["product"] for i in result["items"]] == [i["product"] for i in single]
            assert [i["score"] for i in result["items"]] == pytest.approx([i["score"] for i in single], abs=1e-3)
        else:
            assert result["items"] == single, result["model"]
    assert all(singles[m]["items"] for m in singles)  # none of them trivially empty
    assert _ids(singles["bought-together"])[0] == "14"


def test_the_ring_answers_exactly_or_says_it_cannot() -> None:
    ring = ViewRing(size=3, shoppers=2)
    assert ring.recent(1, 0.0, 3) is None  # not warmed: memory cannot say
    ring.warm([(1, 10, 100.0), (1, 11, 110.0)], horizon=50.0)
    ring.add([(1, 10, 120.0), (1, 12, 130.0), (1, 13, 140.0), (2, 20, 150.0)])
    assert ring.recent(1, 50.0, 3) == [(13, 140.0), (12, 130.0), (10, 120.0)]  # three kept, a repeat moved up
    assert ring.recent(3, 50.0, 3) == []  # never viewed anything after the horizon
    ring.add([(3, 30, 160.0)])  # a third shopper: the least recently active (1) leaves, the horizon moves to 140
    assert ring.horizon == 140.0 and ring.recent(1, 50.0, 3) is None
    assert ring.recent(2, 50.0, 1) == [(20, 150.0)]  # one newer than the horizon fills the answer
    assert ring.recent(2, 50.0, 3) is None and ring.recent(2, 145.0, 3) == [(20, 150.0)]
    ring.forget(2)
    ring.add([(2, 21, 170.0)])  # a batch in flight for a forgotten shopper is refused
    assert ring.recent(2, 145.0, 3) == []


@pytest.mark.parametrize("case", range(6))
def test_a_long_list_cut_to_its_head_gives_the_same_answer(case: int) -> None:
    rng = np.random.default_rng(case)
    brands, leaves = ["a", "b", "c"], [("Shoes", "Running"), ("Shoes", "Trail"), ("Home", "Pots")]
    view = CatalogView([product(i, price=float(rng.integers(5, 200)), merchant=brands[i % 3],
                                category_path=leaves[int(rng.integers(3))], in_stock=bool(i % 7))
                        for i in range(1, 601)])
    scores = np.sort(rng.random(500))[::-1]
    picks = [Pick(int(p), float(s), "trending", "r") for p, s in zip(rng.permutation(600)[:500] + 1, scores,
                                                                     strict=True)]
    query = [FeedQuery(), FeedQuery(categories=("Running",)), FeedQuery(max_price=40.0),
             FeedQuery(in_stock=True, exclude=frozenset(range(1, 300))), FeedQuery(min_score=0.7),
             FeedQuery(categories=("Pots", "Trail"), min_price=100.0)][case]
    now = now_utc()
    rules = (Rule("pin", product_id=int(picks[-1].product_id), position=2, rule_id=1),) if case % 2 else ()
    how = Finish(query, 10, frozenset(p.product_id for p in picks[:8]), 2, "brand", rules, now)
    m = Moment(view, None, rules, now, np.zeros(0), (), view.version)
    head = head_of(m, picks, how)
    assert len(head) < len(picks) and finish(view, head, how) == finish(view, picks, how)
    hidden = replace(how, rules=(Rule("hide", brand="a", rule_id=2),))
    assert head_of(m, picks, hidden) == picks  # a hide (or boost, bury) rule: the whole list goes to the pipeline
