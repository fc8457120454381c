"""Public data sets as the appliance's own types: `(list[Product], list[Event])`, for benchmarks and slow tests.

The files live under `shared/datasets/` (see its README.md for the sources and licences); nothing is
downloaded. Each loader documents how the data set maps onto products and events.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RetailData:
    """The UCI Online Retail file in the shop's own terms: its StockCodes and CustomerIDs."""

    products: list[tuple[str, str, float | None]]  # (StockCode, name, price), sorted by StockCode
    purchases: list[tuple[str, str, datetime]]  # (CustomerID, StockCode, InvoiceDate), in file order


def read_online_retail(path: str | Path) -> RetailData:
    """UCI Online Retail (CSV with InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
    CustomerID, Country) -> products and purchases, keyed by the shop's own ids.

    - product: one per StockCode (upper-cased); name = its most frequent Description; price = the median
      positive UnitPrice (the shop's `catalog.tier_thresholds` make the tier); no category tree, no colour, no
      created_at (the file does not say when a product arrived);
    - purchase: each line with a CustomerID and Quantity > 0 at InvoiceDate (naive: the data is UK time, an
      hour off UTC in summer, which does not change any customer's order of events); CustomerID as written
      without its decimal point (`17850.0` -> `17850`);
    - dropped: lines without a customer (`NA`: a guest checkout, nobody to personalise for; they still say
      nothing the purchases of known customers do not), with Quantity <= 0 (returns and cancellations, invoice
      numbers starting with C: not a signal of taste), fee/postage codes (`RETAIL_NON_PRODUCTS`) and codes
      without any Description.
    """
    names: dict[str, Counter[str]] = defaultdict(Counter)
    prices: dict[str, list[float]] = defaultdict(list)
    lines: list[tuple[str, str, datetime]] = []
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
            lines.append((str(int(float(customer))), code, datetime.fromisoformat(row["InvoiceDate"].strip())))
    products = [(code, names[code].most_common(1)[0][0], round(median(prices[code]), 2) if prices[code] else None)
                for code in sorted(names)]
    return RetailData(products, [line for line in lines if line[1] in names])


def load_online_retail(path: str | Path) -> tuple[list[Product], list[Event]]:
    """`read_online_retail` as the appliance's types: product ids 1..N in sorted StockCode order, customer ids
    the CustomerIDs, every line a `product_purchased`."""
    data = read_online_retail(path)
    ids = {code: i for i, (code, _, _) in enumerate(data.products, start=1)}
    products = [Product(product_id=ids[code], name=name, price=price) for code, name, price in data.products]
    events = [Event(int(customer), ids[code], "product_purchased", ts) for customer, code, ts in data.purchases]
    events.sort(key=lambda e: (e.ts, e.customer_id, e.product_id))
    return products, events


def _open(path: Path):
    if not path.is_file():
        raise InvalidInput(f"data set file not found: {path}", field="dataset")
    return path.open(newline="", encoding="utf-8")
