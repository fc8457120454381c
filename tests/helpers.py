"""Helpers for tests: waiting on background work, small catalogs."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from litestar.testing import TestClient

from appliance.config_sections import ElasticConfig
from appliance.types import Product

# TestClient's base URL: a loopback Host (the default testserver.local is not in the Host allow-list)
LOCAL = "http://127.0.0.1:8000"


def wait_until(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, all its threads (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_on_server(check: Callable[[], bool], server: subprocess.Popen, cpu_budget: float, what: str,
                   hang_seconds: float = 900.0) -> None:
    """Wait until `check()` holds, for as long as the server process works towards it: the budget is the server's
    own CPU seconds, so a loaded machine (which stretches the wall clock, not the work) cannot fail it. Fails when
    the server exits, spends `cpu_budget` CPU seconds without getting there, or gets nowhere in `hang_seconds`."""
    start, deadline = cpu_seconds(server.pid), time.monotonic() + hang_seconds
    while not check():
        if server.poll() is not None:
            raise AssertionError(f"the server exited ({server.returncode}) while waiting for {what}")
        used = cpu_seconds(server.pid) - start
        if used > cpu_budget:
            raise AssertionError(f"timed out waiting for {what}: {used:.1f} CPU s of the server spent")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {hang_seconds:g} s, {used:.1f} CPU s of the server")
        time.sleep(0.05)


def wait_embedded(client: TestClient) -> None:
    wait_until(lambda: client.get("/health/ready").json()["pending_embeddings"] == 0, what="embeddings")
    wait_until(
        lambda: client.get("/health/ready").json()["indexed"] == client.get("/health/ready").json()["products"],
        what="index sync",
    )


SHOES = [
    ("Nike Air Zoom Pegasus", "Nike", ["Shoes", "Sneakers", "Running"], "Blue", 129.0),
    ("Asics Gel Nimbus", "Asics", ["Shoes", "Sneakers", "Running"], "Black", 159.0),
    ("Adidas Ultraboost Light", "Adidas", ["Shoes", "Sneakers", "Running"], "White", 189.0),
    ("New Balance Fresh Foam 1080", "New Balance", ["Shoes", "Sneakers", "Running"], "Grey", 164.0),
    ("Brooks Ghost 15", "Brooks", ["Shoes", "Sneakers", "Running"], "Blue", 139.0),
    ("Nike LeBron 21", "Nike", ["Shoes", "Sneakers", "Basketball"], "Red", 200.0),
]
OTHERS = [
    ("Sony WH-1000XM5 Wireless Headphones", "Sony", ["Electronics", "Audio", "Headphones"], "Black", 399.0),
    ("Bose QuietComfort Earbuds", "Bose", ["Electronics", "Audio", "Earbuds"], "White", 279.0),
    ("Le Creuset Cast Iron Casserole", "Le Creuset", ["Home & Kitchen", "Cookware", "Pots"], "Orange", 320.0),
    ("Tefal Non-Stick Frying Pan", "Tefal", ["Home & Kitchen", "Cookware", "Pans"], "Black", 35.0),
    ("Lego Star Wars Millennium Falcon", "Lego", ["Toys", "Building Sets", "Lego"], "Grey", 169.0),
    ("Levi's 501 Original Jeans", "Levi's", ["Clothing", "Bottoms", "Jeans"], "Blue", 89.0),
    ("Uniqlo Cotton Crew T-Shirt", "Uniqlo", ["Clothing", "Tops", "T-Shirts"], "White", 14.9),
    ("Philips Electric Toothbrush", "Philips", ["Beauty", "Oral Care", "Toothbrushes"], "White", 59.0),
]


def small_catalog() -> list[dict]:
    """A few running shoes among unrelated products, as the JSON a shop would send."""
    return [
        {"product_id": i, "name": n, "merchant": m, "category_path": c, "color": col, "price": price,
         "created_at": f"2026-01-{i:02d}T10:00:00Z"}
        for i, (n, m, c, col, price) in enumerate(SHOES + OTHERS, start=1)
    ]


def product(pid: int, name: str = "Thing", price: float | None = 10.0, **kw) -> Product:
    return Product(product_id=pid, name=name, merchant=kw.get("merchant", "Acme"),
                   category_path=kw.get("category_path", ("Home", "Misc")), color=kw.get("color", "Red"),
                   price=price, in_stock=kw.get("in_stock", True), created_at=kw.get("created_at"))


# An enabled Elasticsearch config for adapter tests (the cluster itself is elasticmock or noida-db).
ELASTIC = ElasticConfig(
    enabled=True, url="http://localhost:9200", product_index="products", user_index="shoppers",
    vector_field="product_vector", user_vector_field="user_vector", api_key="", username="", password="",
    verify_certs=True, ca_certs="", timeout_seconds=10.0, batch_size=100, max_retries=2, backoff_seconds=0.5,
    backoff_max_seconds=4.0, knn_num_candidates=100,
)
