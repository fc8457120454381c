"""GET /customers/{id}/feed through the same finishing steps as the widgets, over real HTTP and a real store:
one 0..1 score scale for every source with a reason and explain parts, min_score on every source,
merchandising rules across pages (and a feed_id keeping page 1's rules), diversity, and one shopper's burst
never making a product popular for strangers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from tests.helpers import LOCAL, wait_embedded, wait_until
from web.app import create_app

ADMIN = {"X-Admin-Key": "s3cret"}
BRANDS = ["Nike", "Asics", "Adidas", "Brooks", "Sony", "Bose", "Tefal", "Lego"]
KINDS = [("Running Shoe", ["Shoes", "Sneakers", "Running"]), ("Headphones", ["Electronics", "Audio", "Headphones"]),
         ("Frying Pan", ["Home & Kitchen", "Cookware", "Pans"]), ("Building Set", ["Toys", "Building Sets", "Lego"])]
N = 48  # products; 1..6 are Nike and the six most popular; 41..48 arrived in the last days
NEW = range(41, N + 1)


def _catalog() -> list[dict]:
    now = datetime.now(UTC)
    out = []
    for i in range(1, N + 1):
        brand = "Nike" if i <= 6 else BRANDS[i % len(BRANDS)]
        kind, path = KINDS[i % len(KINDS)]
        created = now - timedelta(days=(i - 40) * 0.5) if i in NEW else datetime(2026, 1, 1, tzinfo=UTC)
        out.append({"product_id": i, "name": f"{brand} {kind} {i}", "merchant": brand, "category_path": path,
                    "color": "Blue", "price": 10.0 + i, "created_at": created.isoformat()})
    return out


def _drained(client: TestClient) -> bool:
    q = client.get("/queue").json()
    return q["depth"] == 0 and q["in_flight"] == 0


def _open(tmp_path, encoder, max_in_row: int) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False, "admin_key": "s3cret"},
        "jobs": {"enabled": False}, "widgets": {"max_in_row": max_in_row},
        "realtime": {"receive_wait_seconds": 0.2},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=_catalog()).status_code == 202
        wait_embedded(client)
        # popularity: product i (1..30) clicked by 31 - i distinct shoppers, so 1 > 2 > ... > 30 > the rest
        events = [{"customer_id": f"crowd-{s}", "product_id": i, "event_name": "product_clicked"}
                  for i in range(1, 31) for s in range(31 - i)]
        assert client.post("/events", json=events).status_code == 202
        # one shopper with a taste: a new arrival and a headphone
        mine = [{"customer_id": "me", "product_id": p, "event_name": "product_clicked"} for p in (41, 9)]
        assert client.post("/events", json=mine).status_code == 202
        wait_until(lambda: _drained(client), what="the consumer")
        client.app.state.services.recommender.refresh_popularity()
        yield client


@pytest.fixture
def shop(tmp_path, encoder) -> Iterator[TestClient]:
    yield from _open(tmp_path, encoder, max_in_row=0)


@pytest.fixture
def diverse_shop(tmp_path, encoder) -> Iterator[TestClient]:
    yield from _open(tmp_path, encoder, max_in_row=2)


def _walk(client: TestClient, customer: str, per_page: int, feed_id: str | None = None, **params
          ) -> tuple[list[dict], int, str]:
    """Every page of one feed (one feed_id): its items in order, its total and the feed_id."""
    items, page = [], 1
    while True:
        answer = client.get(f"/customers/{customer}/feed", params={
            "page": page, "per_page": per_page, **({"feed_id": feed_id} if feed_id else {}), **params})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        feed_id, total = body["feed_id"], body["total"]
        items += body["items"]
        if page >= body["pages"]:
            return items, total, feed_id
        page += 1


def _ids(items: list[dict]) -> list[int]:
    return [int(i["product"]["product_id"]) for i in items]


def _rule(client: TestClient, **rule) -> dict:
    answer = client.post("/rules", json=rule, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_every_source_scores_on_0_to_1_with_a_reason_and_explain_parts(shop: TestClient) -> None:
    body = shop.get("/customers/me/feed", params={"per_page": 40, "explain": "true"}).json()
    assert body["personalized"]
    items = body["items"]
    by_source = {s: [i for i in items if i["source"] == s] for s in ("personal", "popular", "new")}
    assert all(by_source.values()), {s: len(v) for s, v in by_source.items()}  # a mixed page
    assert all(0.0 <= i["score"] <= 1.0 for i in items)
    names = {int(p["product_id"]): p["name"] for p in _catalog()}
    for item in by_source["personal"]:  # the mean-vector fallback: no prior, the score is the similarity
        assert item["score"] == pytest.approx(item["explain"]["similarity"], abs=1e-6)
        assert item["explain"]["popularity_prior"] == 0.0
        # both viewed products are headphones: the newest of them names a headphone (not itself), else none
        expected = ("because you viewed " + names[41 if item["product"]["product_id"] == "9" else 9]
                    if item["product"]["category_path"][-1] == "Headphones" else "picked for you")
        assert item["reason"] == expected, item
    for item in by_source["popular"]:
        assert item["score"] == pytest.approx(item["explain"]["popularity"], abs=1e-6)
        assert item["reason"] == f"popular in {item['product']['category_path'][-1]}"
    for item in by_source["new"]:
        assert int(item["product"]["product_id"]) in NEW
        assert item["score"] == pytest.approx(item["explain"]["freshness"], abs=1e-6)
        assert item["reason"] == "new arrival"
    for source in by_source.values():  # each source best first
        scores = [i["score"] for i in source]
        assert scores == sorted(scores, reverse=True)
    narrow = shop.get("/customers/me/feed", params={"category": "Headphones", "min_price": 45}).json()["items"]
    assert sorted(_ids(narrow)) == [37, 41, 45]  # a narrow filter: each source still gives only its own
    assert all(int(i["product"]["product_id"]) in NEW for i in narrow if i["source"] == "new")
    stranger = shop.get("/customers/nobody/feed", params={"per_page": 5}).json()
    assert stranger["ordering"] == "popular" and "explain" not in stranger["items"][0]
    assert _ids(stranger["items"]) == [1, 2, 3, 4, 5] and stranger["items"][0]["score"] == 1.0
    assert [i["score"] for i in stranger["items"]] == pytest.approx([1.0, 29 / 30, 28 / 30, 27 / 30, 26 / 30])


def test_min_score_filters_every_source_and_the_total_stays_honest(shop: TestClient) -> None:
    everything, total_all, _ = _walk(shop, "me", 10)
    assert total_all == N and len(everything) == N and any(i["score"] < 0.75 for i in everything)
    items, total, _ = _walk(shop, "me", 7, min_score=0.75)
    assert {i["source"] for i in items} >= {"personal", "popular", "new"}
    assert all(i["score"] >= 0.75 for i in items)
    assert len(items) == total == len(set(_ids(items))) < N  # every page joined, none repeated
    popular = [i for i in items if i["source"] == "popular"]
    assert all(int(i["product"]["product_id"]) <= 9 for i in popular)  # 23 / 30 clickers (46 / 60) is the cut-off
    for bad in ("-0.1", "1.5", "x"):
        answer = shop.get("/customers/me/feed", params={"min_score": bad})
        assert answer.status_code == 400 and "min_score" in answer.text


def test_rules_apply_to_every_page_and_a_feed_id_keeps_page_ones_rules(shop: TestClient) -> None:
    hide_brand = _rule(shop, kind="hide", brand="Tefal")
    _rule(shop, kind="hide", category="Building Sets")
    pin = _rule(shop, kind="pin", product_id=29, position=2)
    boost = _rule(shop, kind="boost", product_id=25, strength=0.9)
    _rule(shop, kind="bury", product_id=1, strength=1.0)
    catalog = _catalog()
    tefal = {int(p["product_id"]) for p in catalog if p["merchant"] == "Tefal"}
    sets = {int(p["product_id"]) for p in catalog if p["category_path"][1] == "Building Sets"}
    for customer in ("nobody", "me"):
        items, total, _ = _walk(shop, customer, 5, explain="true")
        ids = _ids(items)
        assert not (tefal | sets) & set(ids), customer
        assert len(ids) == len(set(ids)) == total == N - len(tefal | sets), customer  # no duplicates, no gaps
        assert ids[1] == 29 and items[1]["source"] == "pinned" and items[1]["reason"] == "pinned"
        assert items[1]["explain"] == {"pin_rule": float(pin["rule_id"])} and 29 not in ids[2:]
        assert all(0.0 <= i["score"] <= 1.0 for i in items)
    items, _, _ = _walk(shop, "nobody", 5, explain="true")
    ids = _ids(items)
    boosted = items[ids.index(25)]
    base = boosted["explain"]["popularity"]
    assert boosted["explain"][f"boost_rule_{boost['rule_id']}"] == 0.9
    assert boosted["score"] == pytest.approx(base + 0.9 * (1 - base), abs=1e-6)
    assert ids[:3] == [2, 29, 25]  # 6 / 30 boosted to 0.92 passes all but 29 / 30; 1 is buried, 3 hidden
    assert items[ids.index(1)]["score"] == 0.0 and all(i["score"] == 0.0 for i in items[ids.index(1):])

    first = shop.get("/customers/nobody/feed", params={"per_page": 5}).json()
    on_page_three = _ids(shop.get("/customers/nobody/feed", params={
        "per_page": 5, "page": 3, "feed_id": first["feed_id"]}).json()["items"])
    _rule(shop, kind="hide", product_id=on_page_three[0])
    assert shop.delete(f"/rules/{hide_brand['rule_id']}", headers=ADMIN).status_code == 204
    kept = shop.get("/customers/nobody/feed", params={"per_page": 5, "page": 3, "feed_id": first["feed_id"]}).json()
    assert _ids(kept["items"]) == on_page_three and kept["total"] == first["total"]  # the snapshot's rules
    fresh, total, _ = _walk(shop, "nobody", 5)
    assert on_page_three[0] not in _ids(fresh) and tefal <= set(_ids(fresh))  # the new rules, for a new feed
    assert total == N - len(sets) - 1 == len(fresh)


def test_an_expired_or_future_rule_does_nothing_on_the_feed(shop: TestClient) -> None:
    now = datetime.now(UTC)
    _rule(shop, kind="hide", product_id=1, ends_at=(now - timedelta(hours=1)).isoformat())
    _rule(shop, kind="pin", product_id=30, position=1, starts_at=(now + timedelta(hours=1)).isoformat())
    assert _ids(shop.get("/customers/nobody/feed", params={"per_page": 3}).json()["items"]) == [1, 2, 3]


def test_diversity_keeps_runs_of_one_brand_short_on_every_page(diverse_shop: TestClient) -> None:
    items, total, _ = _walk(diverse_shop, "nobody", 4)
    brands = [i["product"]["merchant"] for i in items]
    assert len(items) == total == N == len(set(_ids(items)))
    # the six most popular are all Nike: never three of them in a row, across page boundaries too
    assert all(len({brands[i], brands[i + 1], brands[i + 2]}) > 1 for i in range(len(brands) - 2)
               if brands[i] == "Nike")
    assert _ids(items)[:2] == [1, 2] and brands[2] != "Nike"
    personal, _, _ = _walk(diverse_shop, "me", 6)
    runs = [i["product"]["merchant"] for i in personal][:30]  # the tail may hold one brand only
    assert all(not (runs[i] == runs[i + 1] == runs[i + 2]) for i in range(len(runs) - 2))


def test_one_shoppers_burst_does_not_make_a_product_popular_for_strangers(shop: TestClient) -> None:
    burst = [{"customer_id": "bot", "product_id": 35, "event_name": "product_added_to_cart"}] * 50
    assert shop.post("/events", json=burst).status_code == 202
    wait_until(lambda: _drained(shop), what="the consumer")
    shop.app.state.services.recommender.refresh_popularity()
    top = shop.get("/customers/stranger/feed", params={"per_page": 10, "explain": "true"}).json()["items"]
    assert set(_ids(top)) == set(range(1, 11))  # the crowd's ten most clicked, not the bot's cart
    everything, _, _ = _walk(shop, "stranger", 48)
    burst_item = everything[_ids(everything).index(35)]
    assert burst_item["score"] == pytest.approx(8.0 / 60.0, rel=1e-3)  # one shopper counts one purchase at most
