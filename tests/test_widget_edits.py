"""Widget answers kept across catalog edits (jobs/widget_memory.py `Kept`): an edit of a product that an answer
did not read keeps it (not computed again), an edit of one it read is seen by the next request; and the catalog
view's change log that tells them apart (`CatalogView.changed_since`); a shopper who bought none of what an
answer read gets the kept answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from litestar.testing import TestClient

from appliance.catalog_view import LOG_PATCHES, CatalogView
from appliance.config import load_config
from appliance.finish import Finish
from appliance.pipeline import FeedQuery
from appliance.types import now_utc
from jobs.widget_memory import WouldBlock
from jobs.widgets import Ask, recommend
from tests.helpers import LOCAL, product, small_catalog, wait_embedded, wait_until
from web.app import create_app


def test_the_change_log_names_the_products_patched_and_the_categories_whose_members_moved() -> None:
    view = CatalogView([product(1, category_path=("Shoes", "Running")), product(2), product(3)])
    start = view.version
    assert view.changed_since(start) == (frozenset(), frozenset())
    view.upsert([replace(view.products[2], price=11.0)])  # an edit inside its categories
    assert view.changed_since(start) == ({2}, frozenset())
    view.upsert([replace(view.products[1], category_path=("Shoes", "Trail"))])  # moved: Running -> Trail
    assert view.changed_since(start) == ({1, 2}, {"running", "trail"})
    assert view.changed_since(start + 1) == ({1}, {"running", "trail"})
    view.upsert([product(4, category_path=("Toys",))])  # a new product joins its categories
    view.remove([3])
    assert view.changed_since(start + 2) == ({3, 4}, {"toys", "home", "misc"})
    at = view.version
    for i in range(LOG_PATCHES):
        view.upsert([replace(view.products[2], price=float(i))])
    assert view.changed_since(at) == ({2}, frozenset())  # the log reaches back LOG_PATCHES patches
    view.upsert([replace(view.products[1], price=1.0)])
    assert view.changed_since(at) is None  # no longer: a cache computes afresh
    assert view.changed_since(at + 1) == ({1, 2}, frozenset())


@pytest.fixture
def shop(tmp_path, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
        "realtime": {"receive_wait_seconds": 0.2}, "jobs": {"enabled": False},
        "widgets": {"depth": 3},  # k=1: the 5 nearest, so most of the 14 products are not read by an answer
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        yield client


def _stock(client: TestClient, pid: str, in_stock: bool) -> None:
    """PUT the product again with only its stock changed (not part of its text line: its vector stays)."""
    stored = client.get(f"/products/{pid}").json()["product"]
    body = {k: stored[k] for k in ("name", "merchant", "category_path", "color", "price", "created_at")}
    assert client.put(f"/products/{pid}", json={**body, "in_stock": in_stock}).status_code == 200


def test_an_answer_holds_across_edits_it_did_not_read_and_follows_those_it_did(shop: TestClient) -> None:
    services = shop.app.state.services
    parts, products = services.widgets, services.ids.products
    anchor = products.key("1")
    how = Finish(FeedQuery(1, 1, in_stock=True), 1, frozenset(), 2, "brand")
    ask = Ask("looking-similar", (anchor,), None, how)

    def similar() -> list:
        return recommend(parts, ask, parts.call(blocking=True))

    first = similar()
    assert len(first) == 1 and similar() is first  # kept
    kept = parts.memo.sources.get((ask, parts.call(blocking=True).moment().stamp))  # the candidates and what they read
    read = {products.ext(p) for p in kept.products}
    assert str(1) in read and 3 <= len(read) < 14
    unread = next(str(i) for i in range(1, 15) if str(i) not in read)
    index_version = parts.index.version
    _stock(shop, unread, False)
    assert parts.index.version == index_version  # the same text line: no new vector
    assert similar() is first  # the edit did not touch what the answer read: not computed again

    shown = products.ext(first[0].product_id)
    _stock(shop, shown, False)  # the product shown goes out of stock: the in-stock answer shows another
    second = similar()
    assert len(second) == 1 and second[0].product_id != first[0].product_id
    assert shop.get(f"/products/{products.ext(second[0].product_id)}").json()["product"]["in_stock"]
    http = shop.get("/products/1/similar", params={"k": 1, "in_stock": "true"}).json()
    assert [i["product"]["product_id"] for i in http["items"]] == [products.ext(second[0].product_id)]
    _stock(shop, shown, True)  # and back
    assert similar()[0].product_id == first[0].product_id


def test_a_shopper_who_bought_none_of_what_an_answer_read_gets_the_kept_answer(shop: TestClient) -> None:
    services = shop.app.state.services
    parts, products, customers = services.widgets, services.ids.products, services.ids.customers
    ask = Ask("looking-similar", (products.key("1"),), None, Finish(FeedQuery(1, 1), 1, frozenset(), 2, "brand"))
    first = recommend(parts, ask, parts.call(blocking=True))
    kept = parts.memo.answers.get((ask, parts.call(blocking=True).moment().stamp))
    unread = next(str(i) for i in range(2, 15) if products.key(str(i)) not in kept.products)
    shown = products.ext(first[0].product_id)
    now = now_utc().isoformat() + "Z"
    processed = services.consumer.processed
    assert shop.post("/events", json=[
        {"customer_id": "ann", "product_id": unread, "event_name": "product_purchased", "timestamp": now},
        {"customer_id": "bob", "product_id": shown, "event_name": "product_purchased", "timestamp": now},
    ]).status_code == 202
    wait_until(lambda: services.consumer.processed >= processed + 2, what="the consumer")

    def answer_for(who: str) -> list:
        return recommend(parts, replace(ask, customer_id=customers.key(who)), parts.call(blocking=True))

    assert answer_for("ann") is first  # her purchase is not among what the answer read: the same answer
    bobs = answer_for("bob")
    assert len(bobs) == 1 and bobs[0].product_id != first[0].product_id  # his is: left out
    assert recommend(parts, ask, parts.call(blocking=True)) is first  # and his answer is not everyone's


def test_the_fallback_ranks_a_top_category_on_the_event_loop_and_the_whole_shop_off_it(shop: TestClient) -> None:
    services = shop.app.state.services
    parts, products = services.widgets, services.ids.products
    how = Finish(FeedQuery(1, 3), 3, frozenset(), 2, "brand")
    recommend(parts, Ask("trending", (), None, how), parts.call(blocking=True))  # tables, rules, popularity read
    picks = recommend(parts, Ask("bought-together", (products.key("1"),), None, how), parts.call(blocking=False))
    assert all(p.source == "popular" for p in picks)  # answered on the loop: no co-purchases, its category's popular
    stored = shop.get("/products/2").json()["product"]
    body = {k: stored[k] for k in ("name", "merchant", "color", "price", "in_stock", "created_at")}
    assert shop.put("/products/2", json={**body, "category_path": []}).status_code == 200
    with pytest.raises(WouldBlock):  # a product without a category: the whole shop to rank, in a worker thread
        recommend(parts, Ask("bought-together", (products.key("2"),), None, how), parts.call(blocking=False))
