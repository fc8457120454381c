"""What serving keeps in memory costs the cyclic collector little: its full passes held the GIL for 70-150 ms
every few seconds at 100k products (BENCHMARKS.md, "Feed under load"), so long-lived caches keep few tracked
objects, and full passes are paced once the start-up heap is frozen."""

from __future__ import annotations

import collections
import gc
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient

from appliance.config import Config, load_config
from appliance.pipeline import FeedQuery
from appliance.recommender import Personal
from storage.db import Database
from storage.ids import ShopIds
from tests.helpers import LOCAL, product, small_catalog, wait_embedded, wait_until
from tests.test_feed_pipeline import shop  # noqa: F401 (the fixture)
from web.app import create_app
from web.schemas import FeedOut, ProductOuts
from web.services import pace_collector, release_collector


def _tracked(generation: int = 2) -> int:
    gc.collect(generation)
    return len(gc.get_objects())


def test_a_feed_id_of_a_shopper_without_a_vector_keeps_one_tracked_object(shop) -> None:  # noqa: F811
    rec = shop[0]
    rec.feed(FeedQuery())  # the view, the ranking and the compiled sources, built once
    before = _tracked()
    pages = [rec.feed(FeedQuery(), Personal(None, frozenset())) for _ in range(300)]
    assert len({p.feed_id for p in pages}) == 300 and all(p.items for p in pages)
    del pages
    grown = _tracked() - before
    assert grown <= 300 * 1.2, f"{grown / 300:.1f} tracked objects kept per feed_id"  # was 3: sources, empty set


def test_feed_items_are_untracked_so_a_kept_page_costs_the_collector_a_few_objects(shop) -> None:  # noqa: F811
    rec = shop[0]
    rec.feed(FeedQuery())
    before = _tracked()
    pages = [rec.feed(FeedQuery()) for _ in range(200)]  # kept, as the page cache keeps pages
    assert sum(len(p.items) for p in pages) >= 200 * 5
    assert not any(gc.is_tracked(item) for p in pages for item in p.items)
    grown = _tracked() - before
    assert grown <= 200 * 5, f"{grown / 200:.1f} tracked objects kept per page"  # 4: +1 per item before


def test_product_outs_are_built_once_per_product_object_and_untracked(db: Database) -> None:
    ids = ShopIds.open(db).products
    key, = ids.keys(["sku-1"], create=True)
    outs = ProductOuts((25.0, 100.0), ids)
    first = product(key, "Red shoe", category_path=("Shoes", "Sneakers"), price=30.0)
    out = outs(first)
    assert outs(first) is out and out.product_id == "sku-1" and out.price_tier == "mid-range"
    edited = product(key, "Red shoe", category_path=("Shoes", "Sneakers"), price=10.0)  # a new object: an edit
    assert outs(edited).price_tier == "budget" and outs(first) is not out  # each version its own out
    before = _tracked()
    many = [product(key, f"P{i}", category_path=("Home", "Pots")) for i in range(500)]
    built = [outs(p) for p in many]
    assert not gc.is_tracked(built[0]) and not gc.is_tracked(built[0].category_path)
    del built
    assert _tracked() - before <= 500 * 1.1  # the products themselves; their outs and entries add nothing


def test_pacing_freezes_the_start_up_heap_and_spaces_full_passes_and_release_undoes_it() -> None:
    python = gc.get_threshold()
    kept = [[i] for i in range(1000)]  # long-lived, like the catalog view
    try:
        pace_collector(1234)
        assert gc.get_threshold() == (python[0], python[1], 1234)
        assert gc.get_freeze_count() >= len(kept)
        assert all(not any(o is k for o in gc.get_objects()) for k in kept[:3])  # out of every generation
    finally:
        release_collector()
    assert gc.get_threshold() == python and gc.get_freeze_count() == 0
    assert any(o is kept[0] for o in gc.get_objects())


@pytest.fixture
def shallow(tmp_path: Path) -> Config:
    """First lookups of 4 nearest products, so a page of 2 keeps its snapshot's `Personal` (it may extend)."""
    return load_config(overrides={"server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
                                  "feed": {"personal_first_depth": 4}})


def test_a_personal_feed_request_leaves_a_few_tracked_objects_for_the_collector(shallow, encoder) -> None:
    """What one personal feed keeps alive for minutes (its snapshot per feed_id, the page cache's entry) is
    walked by every middle-generation pass of the cyclic collector until it goes: 16 tracked objects per
    request before (snapshot, sources, nearest list, `Personal` and its history closure, the nearest-products
    cache's tuple, the page cache's key, entry, page, query and memo, empty frozensets), 36 before picks were
    untracked; 17.8 in this test on that code (main 7478d9f)."""
    with TestClient(create_app(shallow, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        shoppers = [str(100 + i) for i in range(40)]
        clicks = [{"customer_id": c, "product_id": str(1 + i % 14), "event_name": "product_clicked"}
                  for i, c in enumerate(shoppers)]
        assert client.post("/events", json=clicks).status_code == 202
        services = client.app.state.services
        keys = [services.ids.customers.key(c) for c in shoppers]
        wait_until(lambda: all(services.users.cached(k)[1] is not None for k in keys), what="40 vectors")
        feeds = services.feeds

        def ask(shopper: str, key: int) -> bytes:  # what the feed route does, without the HTTP around it
            query = FeedQuery(per_page=2)  # one per request, as the route parses it
            page = feeds.from_memory(key, query) or feeds.page(key, query)
            return msgspec.json.encode(FeedOut.of(shopper, page, services.product_out, "r", False))

        ask("99", services.ids.customers.key("100"))  # compiled sources, encoders: built once
        gc.collect()
        gc.freeze()  # what was there before: out of the count
        try:
            answers = [ask(c, k) for c, k in zip(shoppers, keys, strict=True)]
            gc.collect(1)  # no full pass: it would untrack dicts, which serving's middle passes never do
            kept = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        finally:
            gc.unfreeze()
        grown = sum(kept.values())
        assert all(b'"ordering":"personal"' in a for a in answers)
        snapshots = list(services.recommender._snapshots.values())[-40:]
        assert sum(s.shallow is not None for s in snapshots) == 40  # each keeps its Personal, as tested here
        assert feeds.pages.misses >= 40 and len(feeds.pages._pages) >= 40  # every page kept by the cache
        # what is left per request: the page's list of picks and its dict of products (a dict is tracked while
        # it holds a tracked object; each Product is)
        assert grown <= 40 * 2.5, f"{grown / 40:.1f} tracked objects kept per personal request: {kept}"
