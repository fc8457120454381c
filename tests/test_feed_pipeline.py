"""The recommender over a real DuckDB catalog: the view is patched in place (never reloaded) and the pipeline's
filters, exclusions and paging give what a whole-catalog mask gave."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest
from msgspec import structs

from appliance.config import load_config
from appliance.pipeline import FeedQuery
from appliance.recommender import FeedSettings, Personal, Recommender
from appliance.types import Event, now_utc
from storage.catalog import CatalogStore
from storage.db import Database
from storage.events import EventStore
from storage.vectors import VectorIndex
from tests.helpers import product

N = 300
SETTINGS = FeedSettings(0.7, 0.1, 14.0, 50, True, 600.0, 1000, 100, 50)
WEIGHTS = {"product_viewed": 1.0, "product_clicked": 2.0, "product_added_to_cart": 5.0,
           "product_favorited": 3.0, "product_shared": 3.0, "product_purchased": 8.0}


def _catalog(now: datetime) -> list:
    paths = [("Shoes", "Sneakers"), ("Home", "Pots"), ("Toys", "Lego")]
    return [product(i, f"P{i}", price=float(i % 50) + 0.5 if i % 17 else None, in_stock=i % 5 != 0,
                    category_path=paths[i % 3], created_at=now - timedelta(days=i % 40)) for i in range(1, N + 1)]


@pytest.fixture
def shop(db: Database, tmp_path):
    now = now_utc()
    store, events = CatalogStore(db), EventStore(db)
    products = _catalog(now)
    store.upsert(products, [p.name for p in products], [f"h{p.product_id}" for p in products], now)
    events.append([Event(1, pid, "product_clicked", now - timedelta(hours=pid % 7)) for pid in range(1, 60)], now)
    index = VectorIndex(tmp_path / "p.hnsw", 8, load_config().index)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, 8)).astype(np.float32)
    index.upsert(np.arange(1, N + 1), vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    loads = []

    def load_catalog():
        loads.append(1)
        return store.all()

    rec = Recommender(load_catalog, lambda at: events.popularity(at, 72.0, WEIGHTS), index.query_many, now_utc, 3600.0,
                      SETTINGS)
    return rec, store, loads, products


def _ids(page) -> list[int]:
    return [s.product_id for s in page.items]


def _everything(rec: Recommender, query: FeedQuery, who: Personal | None = None) -> list[int]:
    first = rec.feed(structs.replace(query, per_page=40), who)
    seen = _ids(first)
    for page in range(2, first.pages + 1):
        seen += _ids(rec.feed(structs.replace(query, page=page, per_page=40, feed_id=first.feed_id), who))
    return seen


@pytest.mark.parametrize("query", [
    FeedQuery(), FeedQuery(categories=("sneakers",)), FeedQuery(min_price=10, max_price=20),
    FeedQuery(in_stock=True, categories=("Lego", "POTS")), FeedQuery(exclude=frozenset({1, 2, 3}), in_stock=False),
    FeedQuery(sort="price_asc", categories=("home",)), FeedQuery(sort="price_desc", max_price=30),
])
def test_every_filter_matches_what_a_whole_catalog_check_finds_and_pages_cover_it_once(shop, query) -> None:
    rec, _, _, products = shop
    wanted = {c.lower() for c in query.categories}
    expected = {p.product_id for p in products
                if (not wanted or {c.lower() for c in p.category_path} & wanted)
                and (query.min_price is None or (p.price is not None and p.price >= query.min_price))
                and (query.max_price is None or (p.price is not None and p.price <= query.max_price))
                and (query.in_stock is None or p.in_stock == query.in_stock) and p.product_id not in query.exclude}
    seen = _everything(rec, query)
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert rec.feed(query).total == len(expected)
    if query.sort:  # priced products in price order, unpriced ones last
        price = {p.product_id: p.price for p in products}
        priced = [price[i] for i in seen if price[i] is not None]
        assert priced == sorted(priced, reverse=query.sort == "price_desc")
        assert [price[i] for i in seen[len(priced):]] == [None] * (len(seen) - len(priced))


def test_edits_patch_the_view_in_place_and_no_feed_reloads_the_catalog(shop) -> None:
    rec, store, loads, products = shop
    first = rec.feed(FeedQuery(per_page=10))
    assert loads == [1]
    target = products[10]  # P11: Home / Pots, in stock
    edited = replace(target, price=999.0, category_path=("Garden", "Tools"))
    new = product(N + 1, "Brand new", price=5.0, category_path=("Garden", "Tools"), created_at=now_utc())
    store.upsert([edited, new], ["x", "y"], ["hx", "hy"], now_utc())
    store.delete(products[0].product_id)
    rec.apply_changes([edited.product_id, new.product_id, products[0].product_id], store.many)

    garden = rec.feed(FeedQuery(categories=("garden",), per_page=50))
    assert set(_ids(garden)) == {edited.product_id, new.product_id}
    assert edited.product_id not in _ids(rec.feed(FeedQuery(categories=("pots",), per_page=200)))
    assert _ids(rec.feed(FeedQuery(min_price=900, per_page=50))) == [edited.product_id]
    assert rec.feed(FeedQuery()).total == N  # one removed, one added
    assert products[0].product_id not in _everything(rec, FeedQuery())
    # the feed_id handed out before the edits still pages without repeats
    later = rec.feed(FeedQuery(page=2, per_page=10, feed_id=first.feed_id))
    assert not set(_ids(later)) & set(_ids(first))
    assert loads == [1], "a product change must never reload the whole catalog"
    # the per-row columns a page gathers from follow the edits: the live product, its brand and path
    view = rec.view()
    for row in range(len(view)):
        now_there = view.products.get(int(view.ids_all[row]))
        assert view.product_all[row] is now_there
        assert view.brand_all[row] == (now_there.merchant or None if now_there else None)
        assert view.path_all[row] == (now_there.category_path or None if now_there else None)


def test_a_shoppers_nearest_products_are_looked_up_once_per_vector_and_purchases_leave(shop) -> None:
    rec, _, _, _ = shop
    calls = []
    nearest = rec._near._nearest
    rec._near._nearest = lambda v, k: calls.append(1) or nearest(v, k)
    vector = np.ones(8, np.float32) / np.sqrt(8)
    who = Personal(vector, frozenset({5}), 0.0, key=("c1", 1))
    page = rec.feed(FeedQuery(per_page=30), who)
    assert page.personalized and {s.source for s in page.items} >= {"personal"}
    assert 5 not in _everything(rec, FeedQuery(), who)
    rec.feed(FeedQuery(per_page=30, categories=("lego",)), who)
    assert len(calls) == 1
    rec.feed(FeedQuery(), structs.replace(who, key=("c1", 2)))  # a new vector: looked up again
    assert len(calls) == 2
    narrowed = rec.feed(FeedQuery(per_page=30, min_score=1.0, categories=("lego",)), who)
    assert all(s.score >= 1.0 for s in narrowed.items if s.source == "personal")


def test_the_consumer_prepares_a_batch_of_shoppers_in_one_search_with_the_lists_one_search_each_gives(shop) -> None:
    rec, _, _, _ = shop
    sizes: list[int] = []
    nearest = rec._near._nearest
    rec._near._nearest = lambda v, k: sizes.append(len(v)) or nearest(v, k)
    vectors = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    history = (7, 8, 40)  # their anchors ("because you viewed") come from it

    def who(tag: str) -> list[Personal]:
        return [Personal(v / np.linalg.norm(v), frozenset(), 0.0, (tag, i), lambda: history)
                for i, v in enumerate(vectors)]

    batch = who("batch")
    rec.prepare(batch + batch[:2])  # a shopper twice in one batch is searched once
    assert sizes == [5]
    prepared = [rec.feed(FeedQuery(per_page=10), w) for w in batch]
    rec.prepare(batch)  # all known: no search
    assert sizes == [5]  # and every page came from the prepared lists
    alone = [rec.feed(FeedQuery(per_page=10), w) for w in who("alone")]
    assert sizes == [5, 1, 1, 1, 1, 1]
    assert [[(s.product_id, s.score, s.reason) for s in p.items] for p in prepared] == \
        [[(s.product_id, s.score, s.reason) for s in p.items] for p in alone]
    assert any(s.reason.startswith("because you viewed") for p in prepared for s in p.items)


def test_a_shallow_first_lookup_serves_page_one_and_a_deeper_page_extends_the_same_order(shop) -> None:
    rec, _, _, _ = shop
    rec.settings = replace(SETTINGS, personal_first_depth=10)
    asked = []
    nearest = rec._near._nearest
    rec._near._nearest = lambda v, k: asked.append(k) or nearest(v, k)
    who = Personal(np.ones(8, np.float32) / np.sqrt(8), frozenset(), 0.0, key=("c9", 1))
    rec.prepare([who])  # the consumer, when the vector changed: the shallow lookup
    first = rec.feed(FeedQuery(per_page=5), who)  # its source head is 2 x 5 = 10: served from it
    assert asked == [10] and first.personalized
    later = [rec.feed(FeedQuery(page=p, per_page=5, feed_id=first.feed_id), who) for p in (2, 3, 4)]
    assert asked == [10, 50]  # page 2 extended the list to the full depth once
    again = rec.feed(FeedQuery(per_page=5, feed_id=first.feed_id), who)
    assert _ids(again) == _ids(first)  # the extension kept the order page 1 was served from
    shown = [pid for page in [first, *later] for pid in _ids(page)]
    assert len(shown) == len(set(shown)) == 20
    rec.settings = SETTINGS  # the whole depth from the start gives the same feed
    fresh = structs.replace(who, key=("c9", 2))
    whole = rec.feed(FeedQuery(per_page=5), fresh)
    assert shown == [pid for p in range(1, 5)
                     for pid in _ids(rec.feed(FeedQuery(page=p, per_page=5, feed_id=whole.feed_id), fresh))]
