"""Merchandising rules over HTTP: CRUD behind the admin key, each rule type on a widget and on the feed in the
batch call, and active periods (a rule past its end or before its start does nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app

ADMIN = {"X-Admin-Key": "s3cret"}


@pytest.fixture
def shop(tmp_path, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False, "admin_key": "s3cret"},
        "jobs": {"enabled": False}, "widgets": {"max_in_row": 0},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        yield client


def _similar(client: TestClient, **params) -> list[dict]:
    return client.get("/products/1/similar", params={"k": 6, **params}).json()["items"]


def _ids(items: list[dict]) -> list[str]:
    return [i["product"]["product_id"] for i in items]


def _rule(client: TestClient, **rule) -> dict:
    answer = client.post("/rules", json=rule, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _when(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def test_rules_need_the_admin_key_and_bad_rules_name_the_field(shop: TestClient) -> None:
    assert shop.get("/rules").status_code == 401
    assert shop.post("/rules", json={"kind": "hide", "brand": "Nike"}).status_code == 401
    assert shop.get("/rules", headers={"X-Admin-Key": "wrong"}).status_code == 401
    for rule, field in [({"kind": "pin", "product_id": 3}, "position"),
                        ({"kind": "boost", "brand": "Nike"}, "strength"), ({"kind": "hide"}, "kind"),
                        ({"kind": "pin", "product_id": "nope", "position": 1}, None),
                        ({"kind": "hide", "brand": "x", "starts_at": _when(2), "ends_at": _when(1)}, "ends_at")]:
        answer = shop.post("/rules", json=rule, headers=ADMIN)
        assert answer.status_code in (404, 422), answer.text
        assert answer.json().get("field") == field
    assert shop.get("/rules", headers=ADMIN).json() == []


def test_pin_puts_a_product_at_its_position_in_every_widget(shop: TestClient) -> None:
    rule = _rule(shop, kind="pin", product_id=12, position=2)
    assert rule["active"] and rule["product_id"] == "12"
    items = _similar(shop)
    assert _ids(items)[1] == "12" and items[1]["reason"] == "pinned" and items[1]["source"] == "pinned"
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    batch = shop.post("/recommendations", json={"requests": [{"model": "feed", "customer_id": "x", "k": 5}]}).json()
    assert _ids(batch["results"][0]["items"])[1] == "12"
    assert "12" not in _ids(_similar(shop, category="Shoes"))  # a pin still obeys the request's filters


def test_hide_products_brands_and_categories(shop: TestClient) -> None:
    before = _ids(_similar(shop, k=13))
    assert {"2", "6"} <= set(before)
    _rule(shop, kind="hide", brand="asics")  # product 2
    _rule(shop, kind="hide", category="Basketball")  # product 6
    hidden = _rule(shop, kind="hide", product_id=3)
    after = _ids(_similar(shop, k=13))
    assert not {"2", "3", "6"} & set(after) and len(after) == len(before) - 3
    assert shop.delete(f"/rules/{hidden['rule_id']}", headers=ADMIN).status_code == 204
    assert "3" in _ids(_similar(shop, k=13))
    assert shop.get(f"/rules/{hidden['rule_id']}", headers=ADMIN).status_code == 404


def test_boost_and_bury_move_scores_on_the_0_to_1_scale(shop: TestClient) -> None:
    before = _similar(shop, k=13, explain="true")
    last = before[-1]["product"]
    boost = _rule(shop, kind="boost", min_price=last["price"], max_price=last["price"], strength=0.9)
    boosted = _similar(shop, k=13, explain="true")
    assert boosted[0]["product"]["product_id"] == last["product_id"]
    assert 0 < boosted[0]["score"] <= 1 and f"boost_rule_{boost['rule_id']}" in boosted[0]["explain"]
    _rule(shop, kind="bury", brand="Nike", strength=1.0)
    buried = _similar(shop, k=13)
    nike = [i for i in buried if i["product"]["merchant"] == "Nike"]
    assert nike and all(i["score"] == 0 for i in nike) and buried[-len(nike):] == nike
    replaced = shop.put(f"/rules/{boost['rule_id']}", json={"kind": "bury", "category": "Toys", "strength": 0.5},
                        headers=ADMIN)
    assert replaced.status_code == 200 and replaced.json()["kind"] == "bury"
    assert _similar(shop, k=13)[0]["product"]["product_id"] != last["product_id"]


def test_rules_apply_only_inside_their_active_period(shop: TestClient) -> None:
    first = _ids(_similar(shop))[0]
    expired = _rule(shop, kind="hide", product_id=int(first), starts_at=_when(-2), ends_at=_when(-1))
    future = _rule(shop, kind="hide", product_id=int(first), starts_at=_when(1))
    assert not expired["active"] and not future["active"]
    assert _ids(_similar(shop))[0] == first
    current = _rule(shop, kind="hide", product_id=int(first), starts_at=_when(-1), ends_at=_when(1))
    assert current["active"] and first not in _ids(_similar(shop))
    listed = shop.get("/rules", headers=ADMIN).json()
    assert [r["rule_id"] for r in listed] == [expired["rule_id"], future["rule_id"], current["rule_id"]]
