"""What serving keeps in memory costs the cyclic collector little: its full passes held the GIL for 70-150 ms
every few seconds at 100k products (BENCHMARKS.md, "Feed under load"), so long-lived caches keep few tracked
objects, and full passes are paced once the start-up heap is frozen."""

from __future__ import annotations

import gc

from appliance.pipeline import FeedQuery
from appliance.recommender import Personal
from storage.db import Database
from storage.ids import ShopIds
from tests.helpers import product
from tests.test_feed_pipeline import shop  # noqa: F401 (the fixture)
from web.schemas import ProductOuts
from web.services import pace_collector, release_collector


def _tracked() -> int:
    gc.collect()
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
