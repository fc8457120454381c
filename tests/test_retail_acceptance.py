"""Acceptance: a real shop's exports (the UCI Online Retail sample, its own StockCodes and CustomerIDs) imported
through the CLI give personal feeds without purchases, a popular feed by the documented rule, and train /
evaluate / retrain / prune that keep every vector and every event."""

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from storage.datasets import RETAIL_FILE
from storage.db import Database
from tests.helpers import LOCAL, wait_until
from web.app import create_app
from web.cli import main

pytestmark = pytest.mark.slow
SOURCE = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / RETAIL_FILE
SHOP_TOML = """[server]
load_demo = false
[jobs]
enabled = false
[training]
epochs = 3   # the flow is under test here, not the tower's quality (BENCHMARKS.md measures that)
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Iterator[dict]:
    if not SOURCE.is_file():
        pytest.skip(f"the shared data set is missing: {SOURCE}")
    root = tmp_path_factory.mktemp("retail")
    files, data, config = root / "files", root / "data", root / "shop.toml"
    config.write_text(SHOP_TOML)
    common = ["--data-dir", str(data), "--config", str(config)]
    assert main(["example", "uci-retail", str(SOURCE), str(files)]) == 0
    assert main(["import", "products", str(files / "products.csv"), *common]) == 0
    assert main(["import", "events", str(files / "events.csv"), *common]) == 0
    with (files / "events.csv").open(newline="") as f:
        events = list(csv.DictReader(f))
    yield {"files": files, "data": data, "config": config, "common": common, "events": events}


def _client(shop: dict, encoder) -> TestClient:
    config = load_config(shop["config"], overrides={"server": {"data_dir": str(shop["data"])}})
    return TestClient(create_app(config, encoder=encoder), base_url=LOCAL)


def _whole_feed(client: TestClient, customer: str) -> tuple[dict, list[dict]]:
    first = client.get(f"/customers/{customer}/feed", params={"per_page": 100}).json()
    items = list(first["items"])
    for page in range(2, first["pages"] + 1):
        items += client.get(f"/customers/{customer}/feed",
                            params={"per_page": 100, "page": page, "feed_id": first["feed_id"]}).json()["items"]
    return first, items


def _counts(shop: dict) -> tuple[int, int]:
    db = Database(shop["data"] / "appliance.duckdb")
    try:
        return db.read("SELECT count(*) FROM user_vectors")[0][0], db.read("SELECT count(*) FROM events")[0][0]
    finally:
        db.close()


def test_the_top_buyer_gets_a_personal_feed_without_their_purchases(shop: dict, encoder) -> None:
    bought: dict[str, set[str]] = defaultdict(set)
    for row in shop["events"]:
        bought[row["customer_id"]].add(row["product_id"])
    top = Counter(row["customer_id"] for row in shop["events"]).most_common(1)[0][0]
    with _client(shop, encoder) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        first, items = _whole_feed(client, top)
    assert first["personalized"] is True and first["ordering"] == "personal"
    ids = [item["product"]["product_id"] for item in items]
    assert len(ids) == len(set(ids)) == first["total"]
    assert not set(ids) & bought[top]
    assert any(not code.isdigit() for code in ids)  # the shop's own StockCodes (85123A, ...) come back


def test_the_popular_feed_follows_the_documented_rule(shop: dict, encoder) -> None:
    """Recomputed from the CSV alone: sum of 8.0 (a purchase) * 2^(-age / 72 h), age back from the newest event,
    each shopper's part in a product capped at the largest event weight (one purchase)."""
    config = load_config(shop["config"])
    weight, half_life = config.events.weights["product_purchased"], config.feed.popularity_half_life_hours
    cap = max(config.events.weights.values())
    times = {(row["customer_id"], row["product_id"],  # an invoice line repeated is one purchase (a set)
              datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC).timestamp()) for row in shop["events"]}
    newest = max(t for _, _, t in times)
    parts: dict[tuple[str, str], float] = defaultdict(float)
    for customer, code, t in times:
        parts[customer, code] += weight * 2.0 ** (-(newest - t) / 3600.0 / half_life)
    expected: dict[str, float] = defaultdict(float)
    for (_, code), part in parts.items():
        expected[code] += min(part, cap)
    with _client(shop, encoder) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        first, items = _whole_feed(client, "someone-new")
    assert first["personalized"] is False and first["ordering"] == "popular"
    scores = {item["product"]["product_id"]: item["score"] for item in items}
    assert all(scores[code] > 0 for code in expected)  # no product with purchases scores 0
    top = max(expected.values())  # scores are on the 0..1 scale: relative to the most popular product
    assert all(math.isclose(scores[code], value / top, rel_tol=1e-5) for code, value in expected.items())
    assert all(scores[code] == 0 for code in set(scores) - set(expected))
    ranked = [item["score"] for item in items]
    assert ranked == sorted(ranked, reverse=True)
    assert items[0]["product"]["product_id"] == max(expected, key=expected.get)


def test_train_evaluate_retrain_and_prune_keep_every_vector_and_event(shop: dict, encoder) -> None:
    vectors, events = _counts(shop)
    # a repeated invoice line (same shopper, product and time) is stored once
    distinct = {(r["customer_id"], r["product_id"], r["event_name"], r["timestamp"]) for r in shop["events"]}
    assert vectors == len({r["customer_id"] for r in shop["events"]}) and events == len(distinct) < len(shop["events"])
    for command in (["train"], ["evaluate"], ["jobs", "run", "retrain"], ["jobs", "run", "prune"]):
        assert main([*command, *shop["common"]]) == 0, command
        assert _counts(shop) == (vectors, events), command
    with _client(shop, encoder) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        top = Counter(row["customer_id"] for row in shop["events"]).most_common(1)[0][0]
        assert client.get(f"/customers/{top}/feed").json()["personalized"] is True
