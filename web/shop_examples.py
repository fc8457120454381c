"""`appliance example NAME SRC OUTDIR`: a public data set turned into the import files a shop would write.

uci-retail: the UCI Online Retail CSV -> products.csv (product_id = StockCode, name, price) and events.csv
(customer_id = CustomerID, product_id = StockCode, product_purchased, timestamp = InvoiceDate); what is kept
and dropped is `storage.datasets.read_online_retail`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from storage.datasets import read_online_retail

EXAMPLES = ("uci-retail",)


def write_uci_retail(src: Path, out: Path) -> tuple[int, int]:
    """Write OUTDIR/products.csv and OUTDIR/events.csv; (products, events) written."""
    data = read_online_retail(src)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "products.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["product_id", "name", "price"])
        writer.writerows((code, name, "" if price is None else price) for code, name, price in data.products)
    with (out / "events.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["customer_id", "product_id", "event_name", "timestamp"])
        writer.writerows((customer, code, "product_purchased", ts.isoformat())
                         for customer, code, ts in data.purchases)
    return len(data.products), len(data.purchases)
