"""Public data sets as the appliance's own types: `(list[Product], list[Event])`, for benchmarks and slow tests.

The files live under `shared/datasets/` (see its README.md for the sources and licences); nothing is
downloaded. Each loader documents how the data set maps onto products and events.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from appliance.errors import InvalidInput
from appliance.types import Event, Product

MOVIELENS_DIR = "ml-latest-small"
RETAIL_FILE = "uci-online-retail/online_retail_random20k_sample.csv"
NO_GENRES = "(no genres listed)"
# StockCodes of the Online Retail data that are fees, postage or manual adjustments, not products.
RETAIL_NON_PRODUCTS = frozenset({
    "POST", "DOT", "M", "D", "C2", "S", "CRUK", "PADS", "BANK CHARGES", "AMAZONFEE", "B", "GIFT",
})


def rating_event(rating: float) -> str:
    """MovieLens stars -> event: >= 4 a strong signal (added to cart), 3-3.5 a click, below 3 a view.

    A view (weight 0.1 by default) keeps a disliked movie as weak evidence of what the user browses,
    as a shop keeps views of products it did not sell.
    """
    if rating >= 4.0:
        return "product_added_to_cart"
    if rating >= 3.0:
        return "product_clicked"
    return "product_viewed"


def load_movielens(folder: str | Path) -> tuple[list[Product], list[Event]]:
    """MovieLens ml-latest-small: movie -> product (id = movieId, name = title with year, category path =
    the genres in file order, no merchant/colour/price); each rating -> one event at its timestamp
    (`rating_event`), customer id = userId. Ratings of movies missing from movies.csv are dropped.
    """
    folder = Path(folder)
    products: list[Product] = []
    with _open(folder / "movies.csv") as f:
        for row in csv.DictReader(f):
            genres = tuple(g for g in row["genres"].split("|") if g and g != NO_GENRES)
            products.append(Product(product_id=int(row["movieId"]), name=row["title"].strip(), category_path=genres))
    known = {p.product_id for p in products}
    events: list[Event] = []
    with _open(folder / "ratings.csv") as f:
        for row in csv.DictReader(f):
            movie = int(row["movieId"])
            if movie in known:
                events.append(Event(
                    customer_id=int(row["userId"]), product_id=movie, event_name=rating_event(float(row["rating"])),
                    ts=datetime.fromtimestamp(int(row["timestamp"]), UTC).replace(tzinfo=None),
                ))
    events.sort(key=lambda e: (e.ts, e.customer_id, e.product_id))
    return products, events


def load_online_retail(path: str | Path) -> tuple[list[Product], list[Event]]:
    """UCI Online Retail (CSV with InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
    CustomerID, Country) -> products and purchases.

    - product: one per StockCode (upper-cased), ids 1..N in sorted StockCode order; name = its most frequent
      Description; price = the median positive UnitPrice (the shop's `catalog.tier_thresholds` make the tier);
    - event: each line with a CustomerID and Quantity > 0 -> `product_purchased` at InvoiceDate (naive UTC;
      the data is UK time, an hour off in summer, which does not change any customer's order of events);
    - dropped: lines without a customer (`NA`: nobody to personalise for), with Quantity <= 0 (returns and
      cancellations, invoice numbers starting with C: not a signal of taste), fee/postage codes
      (`RETAIL_NON_PRODUCTS`) and codes without any Description.
    """
    names: dict[str, Counter[str]] = defaultdict(Counter)
    prices: dict[str, list[float]] = defaultdict(list)
    lines: list[tuple[int, str, datetime]] = []
    with _open(Path(path)) as f:
        for row in csv.DictReader(f):
            code = row["StockCode"].strip().upper()
            if not code or code in RETAIL_NON_PRODUCTS:
                continue
            description = row["Description"].strip()
            if description and description != "NA":
                names[code][description] += 1
            price = float(row["UnitPrice"])
            if price > 0:
                prices[code].append(price)
            customer = row["CustomerID"].strip()
            if customer in ("", "NA") or float(row["Quantity"]) <= 0:
                continue
            lines.append((int(float(customer)), code, datetime.fromisoformat(row["InvoiceDate"].strip())))
    codes = sorted(names)
    ids = {code: i for i, code in enumerate(codes, start=1)}
    products = [
        Product(product_id=ids[code], name=names[code].most_common(1)[0][0],
                price=round(median(prices[code]), 2) if prices[code] else None)
        for code in codes
    ]
    events = [Event(customer, ids[code], "product_purchased", ts) for customer, code, ts in lines if code in ids]
    events.sort(key=lambda e: (e.ts, e.customer_id, e.product_id))
    return products, events


def _open(path: Path):
    if not path.is_file():
        raise InvalidInput(f"data set file not found: {path}", field="dataset")
    return path.open(newline="", encoding="utf-8")
