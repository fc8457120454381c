"""The demo shop generator: deterministic, real-looking, and with tastes that show in the data."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest

from appliance.demo import DemoShop, Taste, generate_demo
from appliance.demo_catalog import DEMO_CATEGORY_TREE
from appliance.types import EVENT_NAMES, Product

END = datetime(2025, 6, 1, 12, 0, 0)
SEED, PRODUCTS, CUSTOMERS, DAYS = 7, 2000, 300, 7  # the [demo] defaults in config.toml


def tier(price: float) -> str:
    if price < 25:
        return "budget"
    if price < 100:
        return "mid-range"
    if price < 300:
        return "premium"
    return "luxury"


@pytest.fixture(scope="module")
def shop() -> DemoShop:
    return generate_demo(SEED, PRODUCTS, CUSTOMERS, DAYS, END)


def test_same_arguments_same_shop_and_another_seed_differs(shop: DemoShop) -> None:
    again = generate_demo(SEED, PRODUCTS, CUSTOMERS, DAYS, END)
    assert again.products == shop.products
    assert again.events == shop.events
    assert again.tastes == shop.tastes
    other = generate_demo(SEED + 1, PRODUCTS, CUSTOMERS, DAYS, END)
    assert other.products != shop.products
    assert other.events != shop.events


def test_defaults_are_sized_as_promised() -> None:
    shop = generate_demo(SEED, PRODUCTS, CUSTOMERS, DAYS, END)
    assert 15_000 <= len(shop.events) <= 30_000


def test_ids_are_contiguous(shop: DemoShop) -> None:
    assert [p.product_id for p in shop.products] == list(range(1, PRODUCTS + 1))
    assert sorted(shop.tastes) == list(range(1001, 1001 + CUSTOMERS))
    assert {e.customer_id for e in shop.events} == set(shop.tastes)


def test_catalog_looks_like_a_shop(shop: DemoShop) -> None:
    leaves = {
        (parent, category, sub)
        for parent, (_, categories) in DEMO_CATEGORY_TREE.items()
        for category, (_, subs) in categories.items()
        for sub in subs
    }
    assert 6 <= len(DEMO_CATEGORY_TREE) <= 8
    assert {p.category_path for p in shop.products} == leaves
    assert {tier(p.price) for p in shop.products} == {"budget", "mid-range", "premium", "luxury"}
    out_of_stock = sum(not p.in_stock for p in shop.products) / len(shop.products)
    assert 0.03 <= out_of_stock <= 0.12
    assert all(p.name and p.merchant and p.color and p.price > 0 for p in shop.products)
    assert all(p.name.startswith(p.merchant) for p in shop.products)
    assert len({p.name for p in shop.products}) > len(shop.products) // 2
    assert all(END - timedelta(days=91) <= p.created_at <= END for p in shop.products)
    new = sum(p.created_at > END - timedelta(days=DAYS) for p in shop.products)
    assert 0 < new < len(shop.products) // 5


def test_events_fall_in_the_window_sorted_and_point_at_existing_products(shop: DemoShop) -> None:
    products = {p.product_id: p for p in shop.products}
    assert all(END - timedelta(days=DAYS) < e.ts <= END for e in shop.events)
    assert all(a.ts <= b.ts for a, b in zip(shop.events, shop.events[1:], strict=False))
    assert all(e.product_id in products for e in shop.events)
    assert all(e.event_name in EVENT_NAMES for e in shop.events)
    assert all(products[e.product_id].created_at <= e.ts for e in shop.events)


def test_event_mix(shop: DemoShop) -> None:
    mix = Counter(e.event_name for e in shop.events)
    assert mix["product_viewed"] > mix["product_clicked"] > mix["product_added_to_cart"] > 0
    assert mix["product_added_to_cart"] > max(mix["product_favorited"], mix["product_shared"])
    assert all(mix[name] > 0 for name in EVENT_NAMES)


def test_activity_varies_between_shoppers(shop: DemoShop) -> None:
    counts = sorted(Counter(e.customer_id for e in shop.events).values())
    assert counts[0] <= 10
    assert counts[-1] >= 200
    assert 20 <= counts[len(counts) // 2] <= 80


def test_hidden_tastes_show_in_the_data(shop: DemoShop) -> None:
    products = {p.product_id: p for p in shop.products}
    by_customer: dict[int, list[Product]] = defaultdict(list)
    for e in shop.events:
        by_customer[e.customer_id].append(products[e.product_id])
    lifts = []
    for customer_id, taste in shop.tastes.items():
        assert isinstance(taste, Taste) and 1 <= len(taste.categories) <= 2 and 1 <= len(taste.colors) <= 2
        seen = by_customer[customer_id]
        in_taste = sum(taste.matches(p) for p in seen) / len(seen)
        in_catalog = sum(taste.matches(p) for p in shop.products) / len(shop.products)
        lifts.append((in_taste, in_catalog))
    mean_taste = sum(t for t, _ in lifts) / len(lifts)
    mean_catalog = sum(c for _, c in lifts) / len(lifts)
    assert 0.7 <= mean_taste <= 0.9  # mostly in taste, with real noise
    assert mean_catalog < 0.1
    assert sum(t > 5 * c for t, c in lifts) >= 0.95 * len(lifts)


def test_colour_and_tier_preferences_show_within_the_taste(shop: DemoShop) -> None:
    """Among a shopper's in-taste interactions, their colours and tier are over-represented."""
    products = {p.product_id: p for p in shop.products}
    seen_colour, seen_tier, base_colour, base_tier = [], [], [], []
    for customer_id, taste in shop.tastes.items():
        seen = [products[e.product_id] for e in shop.events if e.customer_id == customer_id]
        seen = [p for p in seen if taste.matches(p)]
        pool = [p for p in shop.products if taste.matches(p)]
        seen_colour.append(sum(p.color in taste.colors for p in seen) / max(1, len(seen)))
        seen_tier.append(sum(tier(p.price) == taste.tier for p in seen) / max(1, len(seen)))
        base_colour.append(sum(p.color in taste.colors for p in pool) / len(pool))
        base_tier.append(sum(tier(p.price) == taste.tier for p in pool) / len(pool))
    assert sum(seen_colour) > 1.3 * sum(base_colour)
    assert sum(seen_tier) > 1.2 * sum(base_tier)


def test_popular_products_exist(shop: DemoShop) -> None:
    counts = Counter(e.product_id for e in shop.events)
    top = sum(c for _, c in counts.most_common(len(shop.products) // 20))
    assert top > 0.25 * len(shop.events)  # the top 5% of products draw over a quarter of the interactions


def test_small_and_odd_sizes() -> None:
    tiny = generate_demo(1, 5, 3, 1, END)
    assert [p.product_id for p in tiny.products] == [1, 2, 3, 4, 5]
    assert sorted(tiny.tastes) == [1001, 1002, 1003]
    assert all(END - timedelta(days=1) < e.ts <= END for e in tiny.events)
    with pytest.raises(ValueError):
        generate_demo(1, 0, 3, 1, END)
