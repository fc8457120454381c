"""The demo shop's catalog (appliance/demo.py makes its shoppers and their events): a category tree of real-looking
brands, model words and median prices, colours by how common they are, and `catalog`, the products drawn from them.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from itertools import accumulate

from appliance.types import Product

_Leaves = dict[str, tuple[str, float]]  # subcategory -> (noun, median price)
_Categories = dict[str, tuple[tuple[str, ...], _Leaves]]  # category -> (brands, subcategories)

# parent -> (model words, {category -> (brands, {subcategory -> (noun, median price)})})
DEMO_CATEGORY_TREE: dict[str, tuple[tuple[str, ...], _Categories]] = {
    "Shoes": (
        ("Gel", "Nimbus", "Air", "Zoom", "Pegasus", "Ultra", "Boost", "Fresh Foam", "Trail", "Glide", "Apex"),
        {
            "Sneakers": (("Nike", "Adidas", "New Balance", "Asics", "Puma"), {
                "Running": ("Running Shoe", 110.0), "Basketball": ("Basketball Shoe", 120.0),
                "Lifestyle": ("Sneaker", 80.0)}),
            "Boots": (("Salomon", "Merrell", "Timberland", "Dr. Martens"), {
                "Hiking": ("Hiking Boot", 150.0), "Chelsea": ("Chelsea Boot", 140.0),
                "Winter": ("Winter Boot", 130.0)}),
            "Sandals": (("Birkenstock", "Teva", "Crocs", "Havaianas"), {
                "Slides": ("Slide", 30.0), "Sport Sandals": ("Sport Sandal", 50.0)}),
        },
    ),
    "Clothing": (
        ("Essential", "Classic", "Heritage", "Urban", "Relaxed", "Slim", "Everyday", "Alpine", "Coastal"),
        {
            "Tops": (("Uniqlo", "Levi's", "Carhartt", "H&M", "Ralph Lauren"), {
                "T-Shirts": ("T-Shirt", 20.0), "Shirts": ("Shirt", 45.0), "Hoodies": ("Hoodie", 60.0)}),
            "Bottoms": (("Levi's", "Wrangler", "Uniqlo", "Dockers"), {
                "Jeans": ("Jeans", 70.0), "Chinos": ("Chinos", 55.0), "Shorts": ("Shorts", 30.0)}),
            "Outerwear": (("Patagonia", "The North Face", "Arc'teryx", "Columbia"), {
                "Rain Jackets": ("Rain Jacket", 160.0), "Parkas": ("Parka", 330.0),
                "Fleece": ("Fleece Jacket", 90.0)}),
        },
    ),
    "Electronics": (
        ("Pro", "Max", "Air", "Studio", "Wave", "Pulse", "Core", "Flex", "Quiet", "Nova", "Elite"),
        {
            "Audio": (("Sony", "Bose", "JBL", "Sennheiser", "Beats"), {
                "Headphones": ("Headphones", 190.0), "Earbuds": ("Earbuds", 120.0),
                "Speakers": ("Bluetooth Speaker", 90.0)}),
            "Computers": (("Apple", "Dell", "Lenovo", "HP", "Asus"), {
                "Laptops": ("Laptop", 1000.0), "Monitors": ("Monitor", 280.0),
                "Keyboards": ("Keyboard", 70.0)}),
            "Phone Accessories": (("Anker", "Belkin", "Spigen", "OtterBox"), {
                "Cases": ("Phone Case", 20.0), "Chargers": ("Charger", 28.0),
                "Power Banks": ("Power Bank", 40.0)}),
        },
    ),
    "Home & Kitchen": (
        ("Signature", "Artisan", "Classic", "Pro", "Nordic", "Essentials", "Chef", "Smart", "Cloud"),
        {
            "Cookware": (("Le Creuset", "Lodge", "Tefal", "OXO", "Zwilling"), {
                "Pans": ("Frying Pan", 55.0), "Pots": ("Stock Pot", 85.0), "Knives": ("Chef Knife", 70.0)}),
            "Appliances": (("Breville", "KitchenAid", "De'Longhi", "Ninja", "Philips"), {
                "Coffee Machines": ("Coffee Machine", 380.0), "Blenders": ("Blender", 110.0),
                "Toasters": ("Toaster", 55.0)}),
            "Bedding": (("IKEA", "Brooklinen", "Parachute", "Casper"), {
                "Sheets": ("Sheet Set", 85.0), "Pillows": ("Pillow", 35.0), "Duvets": ("Duvet", 160.0)}),
        },
    ),
    "Sports & Outdoors": (
        ("Summit", "Ridge", "Trek", "Basecamp", "Flow", "Sprint", "Peak", "Horizon", "Vapor", "Titan"),
        {
            "Camping": (("Coleman", "MSR", "Big Agnes", "Black Diamond"), {
                "Tents": ("Tent", 260.0), "Sleeping Bags": ("Sleeping Bag", 140.0),
                "Headlamps": ("Headlamp", 35.0)}),
            "Fitness": (("Manduka", "Gaiam", "Bowflex", "Rogue"), {
                "Yoga Mats": ("Yoga Mat", 45.0), "Dumbbells": ("Dumbbell Set", 120.0),
                "Resistance Bands": ("Resistance Band", 18.0)}),
            "Cycling": (("Giro", "Shimano", "Garmin", "Specialized"), {
                "Helmets": ("Bike Helmet", 85.0), "Bike Lights": ("Bike Light", 35.0),
                "Bike Computers": ("Bike Computer", 250.0)}),
        },
    ),
    "Beauty": (
        ("Hydra", "Glow", "Pure", "Radiance", "Velvet", "Botanical", "Silk", "Daily", "Intense"),
        {
            "Skincare": (("CeraVe", "La Roche-Posay", "The Ordinary", "Clinique", "Kiehl's"), {
                "Moisturizers": ("Moisturizer", 25.0), "Serums": ("Serum", 30.0),
                "Sunscreen": ("Sunscreen", 18.0)}),
            "Fragrance": (("Chanel", "Dior", "Jo Malone", "Calvin Klein"), {
                "Perfume": ("Eau de Parfum", 130.0), "Cologne": ("Eau de Toilette", 80.0)}),
            "Hair Care": (("Dyson", "Olaplex", "Moroccanoil", "Remington"), {
                "Shampoo": ("Shampoo", 20.0), "Hair Dryers": ("Hair Dryer", 160.0),
                "Straighteners": ("Hair Straightener", 90.0)}),
        },
    ),
    "Toys": (
        ("Adventure", "Galaxy", "Castle", "Safari", "Rocket", "Ocean", "Dragon", "City", "Jungle", "Turbo"),
        {
            "Building": (("LEGO", "Mega Bloks", "K'NEX", "Playmobil"), {
                "Building Sets": ("Building Set", 60.0), "Construction Kits": ("Construction Kit", 40.0)}),
            "Games": (("Hasbro", "Mattel", "Ravensburger", "Asmodee"), {
                "Board Games": ("Board Game", 35.0), "Puzzles": ("Jigsaw Puzzle", 20.0),
                "Card Games": ("Card Game", 14.0)}),
            "Outdoor Play": (("Little Tikes", "Nerf", "Razor", "Step2"), {
                "Scooters": ("Kick Scooter", 80.0), "Blasters": ("Blaster", 30.0)}),
        },
    ),
}

# Colours with how common they are in the catalog.
DEMO_COLORS: dict[str, float] = {
    "Black": 5.0, "White": 4.0, "Grey": 3.0, "Navy": 2.0, "Blue": 2.0, "Red": 1.5,
    "Green": 1.5, "Beige": 1.5, "Brown": 1.2, "Pink": 1.0, "Yellow": 0.8, "Silver": 1.0,
}
CATALOG_DAYS = 90  # products were created over this many days before `end`
NEW_ARRIVALS = 0.06  # share of products created within the browsing window
OUT_OF_STOCK = 0.07


def subcategories() -> list[tuple[tuple[str, str, str], tuple[str, ...], tuple[str, ...], str, float]]:
    """Every leaf as (path, brands, model words, noun, median price)."""
    leaves = []
    for parent, (models, categories) in DEMO_CATEGORY_TREE.items():
        for category, (brands, subs) in categories.items():
            for sub, (noun, median) in subs.items():
                leaves.append(((parent, category, sub), brands, models, noun, median))
    return leaves


def catalog(rng: random.Random, n: int, end: datetime, days: int) -> list[Product]:
    """`n` products (ids 1..n): a share `NEW_ARRIVALS` created in the `days` before `end`, the others before that
    (back to `CATALOG_DAYS`)."""
    leaves = subcategories()
    leaf_cw = list(accumulate(rng.uniform(0.5, 1.5) for _ in leaves))
    colors, color_cw = list(DEMO_COLORS), list(accumulate(DEMO_COLORS.values()))
    old_span = max(1, (CATALOG_DAYS - days) * 86400)
    products = []
    for product_id in range(1, n + 1):
        path, brands, models, noun, median = rng.choices(leaves, cum_weights=leaf_cw)[0]
        words = rng.sample(models, 2 if rng.random() < 0.35 else 1)
        if rng.random() < 0.3:
            words.append(str(rng.randint(2, 9)))
        brand = rng.choice(brands)
        price = math.floor(max(3.0, rng.lognormvariate(math.log(median), 0.55))) + 0.99
        if rng.random() < NEW_ARRIVALS:
            age = rng.randrange(days * 86400)
        else:
            age = days * 86400 + rng.randrange(old_span)
        products.append(Product(
            product_id=product_id,
            name=" ".join([brand, *words, noun]),
            merchant=brand,
            category_path=path,
            color=rng.choices(colors, cum_weights=color_cw)[0],
            price=price,
            in_stock=rng.random() >= OUT_OF_STOCK,
            created_at=end - timedelta(seconds=age),
        ))
    return products
