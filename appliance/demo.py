"""A deterministic demo shop: a real-looking catalog (appliance/demo_catalog.py) and shoppers with hidden tastes.

`generate_demo` is a pure function of its arguments. Each shopper has a hidden `Taste` (one or two
subcategories, preferred colours and a price tier); they browse in sessions, mostly inside their taste
and otherwise following what is popular, so both a personal model and a popularity baseline have
something real to learn.

Two kinds of ground truth are planted for the widgets: complementary pairs (a product in a leaf of
`COMPLEMENTS` has one partner in the complementary leaf, carted and bought with it in the same session:
laptops with monitors, phone cases with chargers) and a trending burst (a few quiet products that many
shoppers suddenly view in the last `BURST_HOURS` of the window).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate

from appliance.demo_catalog import DEMO_COLORS, catalog
from appliance.text import price_tier
from appliance.types import Event, Product

_Weighted = dict[tuple[str, ...], list[tuple[Product, float]]]  # category path -> (product, popularity)

# Hidden tiers use the shipped [catalog] tier_thresholds; a shop that changes them sees other tiers.
TIER_THRESHOLDS: tuple[float, ...] = (25.0, 100.0, 300.0)
FIRST_CUSTOMER_ID = 1001
IN_TASTE = 0.8  # chance that a viewed product is drawn from the shopper's taste
PREFERENCE_BOOST = 2.5  # weight of an in-taste product in a preferred colour, and again in the preferred tier
# Complementary leaves: a product of the first leaf has one partner in the second, often carted with it.
COMPLEMENTS: dict[str, str] = {
    "Running": "Shorts", "Hiking": "Headlamps", "Laptops": "Monitors", "Cases": "Chargers",
    "Pans": "Knives", "Tents": "Sleeping Bags", "Helmets": "Bike Lights", "Shampoo": "Hair Dryers",
    "Jeans": "T-Shirts", "Coffee Machines": "Toasters", "Yoga Mats": "Resistance Bands",
}
COMPLEMENT_CHANCE = 0.6  # chance that carting (buying) a paired product carts (buys) its partner next
BURST_PRODUCTS = 3  # quiet products that trend at the end of the window
BURST_HOURS = 12.0
BURST_SHARE = 0.15  # share of the views in a session inside the burst that go to a burst product
# Actions after the first view of a session, with their chances.
_ACTIONS: tuple[tuple[str, float], ...] = (
    ("product_viewed", 0.62), ("product_clicked", 0.23), ("product_added_to_cart", 0.08),
    ("product_favorited", 0.025), ("product_shared", 0.015), ("product_purchased", 0.03),
)


@dataclass(frozen=True)
class Taste:
    """A shopper's hidden taste: what they mostly look at."""

    categories: tuple[tuple[str, ...], ...]  # 1-2 category paths (parent, category, subcategory)
    colors: tuple[str, ...]  # 1-2 preferred colours
    tier: str  # preferred price tier

    def matches(self, product: Product) -> bool:
        return product.category_path in self.categories


@dataclass(frozen=True)
class DemoShop:
    products: list[Product]
    events: list[Event]  # sorted by ts
    tastes: dict[int, Taste]  # customer_id -> hidden taste
    partners: dict[int, int]  # product_id -> its complementary product (ground truth for bought-together)
    burst: tuple[int, ...]  # products planted as trending in the last BURST_HOURS


def _popularity(rng: random.Random, products: list[Product]) -> _Weighted:
    """Zipf-like popularity within each subcategory, times a popularity per subcategory."""
    by_leaf: dict[tuple[str, ...], list[Product]] = {}
    for product in products:
        by_leaf.setdefault(product.category_path, []).append(product)
    weighted = {}
    for path in sorted(by_leaf):
        members = by_leaf[path]
        rng.shuffle(members)
        leaf_weight = rng.lognormvariate(0.0, 0.6)
        weighted[path] = [
            (p, leaf_weight / (rank + 1) ** 1.1 * (1.0 if p.in_stock else 0.3))
            for rank, p in enumerate(members)
        ]
    return weighted


def _taste(rng: random.Random, leaves: list[tuple[str, ...]], products_by_leaf: _Weighted) -> Taste:
    first = rng.choice(leaves)
    categories = [first]
    if rng.random() < 0.5:
        same_parent = [leaf for leaf in leaves if leaf[0] == first[0] and leaf != first]
        pool = same_parent if same_parent and rng.random() < 0.6 else [x for x in leaves if x != first]
        if pool:
            categories.append(rng.choice(pool))
    colors = list(DEMO_COLORS)
    chosen = rng.sample(colors, 2 if rng.random() < 0.5 else 1)
    prices = [p.price for leaf in categories for p, _ in products_by_leaf[leaf]]
    tier = price_tier(rng.choice(prices), TIER_THRESHOLDS)
    return Taste(categories=tuple(categories), colors=tuple(chosen), tier=tier)


def _preference(taste: Taste, product: Product) -> float:
    """How much more a shopper likes an in-taste product in their colours and price tier."""
    colour = PREFERENCE_BOOST if product.color in taste.colors else 1.0
    tier = PREFERENCE_BOOST if price_tier(product.price or 0.0, TIER_THRESHOLDS) == taste.tier else 1.0
    return colour * tier


def _n_events(rng: random.Random) -> int:
    kind = rng.random()
    if kind < 0.1:
        return rng.randint(5, 10)
    if kind < 0.92:
        return min(80, max(20, round(rng.lognormvariate(math.log(50), 0.4))))
    return min(450, round(200 * rng.paretovariate(4.0)))


class _Sampler:
    """Weighted draws of products that already exist at a given moment."""

    def __init__(self, weighted: list[tuple[Product, float]]) -> None:
        self.products = [p for p, _ in weighted]
        self.cum = list(accumulate(w for _, w in weighted))

    def draw(self, rng: random.Random, at: datetime) -> Product | None:
        for _ in range(8):
            product = rng.choices(self.products, cum_weights=self.cum)[0]
            if product.created_at is None or product.created_at <= at:
                return product
        return None


def _pairs(rng: random.Random, by_leaf: _Weighted) -> dict[int, int]:
    """Each product of a leaf in COMPLEMENTS gets a partner in the complementary leaf, drawn by popularity."""
    leaf = {path[2]: path for path in by_leaf}
    partners = {}
    for source, target in COMPLEMENTS.items():
        if source not in leaf or target not in leaf:
            continue
        pool = _Sampler(by_leaf[leaf[target]])
        for product, _ in by_leaf[leaf[source]]:
            partners[product.product_id] = rng.choices(pool.products, cum_weights=pool.cum)[0].product_id
    return partners


def _burst(rng: random.Random, by_leaf: _Weighted, window_start: datetime) -> list[Product]:
    """Quiet products (the less popular half of their leaf, in stock, older than the window) that will trend."""
    quiet = [p for members in by_leaf.values() for p, _ in members[len(members) // 2:]
             if p.in_stock and p.created_at is not None and p.created_at < window_start]
    return rng.sample(quiet, min(BURST_PRODUCTS, len(quiet)))


@dataclass(frozen=True)
class _Plants:
    """What a session needs of the planted ground truth."""

    partners: dict[int, Product]  # product_id -> its partner
    burst: list[Product]  # empty outside the burst window


def _session(
    rng: random.Random, length: int, taste: Taste, mine: _Sampler, everyone: _Sampler, start: datetime,
    plants: _Plants,
) -> list[tuple[str, Product]]:
    """One visit: views, and clicks/carts/purchases mostly of what was viewed in it (a paired product's
    partner often carted and bought right after it)."""
    pending: list[tuple[str, Product]] = []
    viewed: list[Product] = []
    clicked: list[Product] = []
    carted: list[Product] = []
    names = [name for name, _ in _ACTIONS]
    action_cw = list(accumulate(chance for _, chance in _ACTIONS))
    out: list[tuple[str, Product]] = []
    for _ in range(length):
        action = rng.choices(names, cum_weights=action_cw)[0] if viewed else "product_viewed"
        product: Product | None = None
        if pending:
            action, product = pending.pop(0)
        elif action in ("product_clicked", "product_favorited", "product_shared") and rng.random() < 0.9:
            # rather something in the taste among what was viewed
            product = rng.choices(viewed, weights=[4.0 if taste.matches(p) else 1.0 for p in viewed])[0]
        elif action == "product_added_to_cart":
            pool = clicked or viewed
            product = rng.choices(pool, weights=[4.0 if taste.matches(p) else 1.0 for p in pool])[0]
        elif action == "product_purchased":
            if carted:
                product = rng.choice(carted)
            else:
                action = "product_viewed"
        if product is None and plants.burst and rng.random() < BURST_SHARE:
            product = rng.choice(plants.burst)
        if product is None:
            product = (mine if rng.random() < IN_TASTE else everyone).draw(rng, start)
            if product is None:
                continue
        if action in ("product_added_to_cart", "product_purchased") and not product.in_stock:
            action = "product_viewed"
        if action == "product_viewed":
            viewed.append(product)
        elif action == "product_clicked":
            clicked.append(product)
        elif action == "product_added_to_cart":
            carted.append(product)
        partner = plants.partners.get(product.product_id)
        if (action in ("product_added_to_cart", "product_purchased") and partner is not None and partner.in_stock
                and (partner.created_at is None or partner.created_at <= start) and rng.random() < COMPLEMENT_CHANCE):
            pending.append((action, partner))
        out.append((action, product))
    return out


def generate_demo(seed: int, n_products: int, n_customers: int, days: int, end: datetime) -> DemoShop:
    """The demo shop for these arguments (`end` is naive UTC; events fall in (end - days, end])."""
    if n_products < 1 or n_customers < 0 or days < 1:
        raise ValueError("the demo needs at least one product and one day")
    rng = random.Random(seed)
    products = catalog(rng, n_products, end, days)
    by_leaf = _popularity(rng, products)
    leaves = list(by_leaf)
    everyone = _Sampler([pw for leaf in leaves for pw in by_leaf[leaf]])
    window_start = end - timedelta(days=days)
    span = days * 86400
    partners = _pairs(rng, by_leaf)
    burst = _burst(rng, by_leaf, window_start)
    by_id = {p.product_id: p for p in products}
    paired = {a: by_id[b] for a, b in partners.items()}
    burst_from = end - timedelta(hours=BURST_HOURS)
    tastes: dict[int, Taste] = {}
    events: list[Event] = []
    for customer_id in range(FIRST_CUSTOMER_ID, FIRST_CUSTOMER_ID + n_customers):
        rng = random.Random(seed * 1_000_003 + customer_id)  # a stream per shopper
        taste = _taste(rng, leaves, by_leaf)
        tastes[customer_id] = taste
        liked = [(p, w * _preference(taste, p)) for leaf in taste.categories for p, w in by_leaf[leaf]]
        mine = _Sampler(liked)
        remaining = _n_events(rng)
        while remaining > 0:
            length = min(remaining, rng.randint(6, 25))
            remaining -= length
            gaps = [3 + int(rng.expovariate(1 / 45)) for _ in range(length)]
            duration = sum(gaps)
            offset = 1 + rng.randrange(max(1, span - duration))
            at = window_start + timedelta(seconds=offset)
            moments = []
            for gap in gaps:
                moments.append(min(at, end))
                at += timedelta(seconds=gap)
            plants = _Plants(paired, burst if moments[0] >= burst_from else [])
            for moment, (action, product) in zip(
                moments, _session(rng, length, taste, mine, everyone, moments[0], plants), strict=False
            ):
                events.append(Event(customer_id, product.product_id, action, moment))
    events.sort(key=lambda e: e.ts)
    return DemoShop(products, events, tastes, partners, tuple(p.product_id for p in burst))
