"""A store written by the appliance before string ids (schema version 6, integer ids everywhere) opens with the
new code: its products, events, vectors, purchases, queued messages and outbox answer under their old ids."""

from __future__ import annotations

import json
from datetime import timedelta

import duckdb
import numpy as np
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.text import product_text, text_hash
from appliance.types import Product, now_utc
from storage.db import Database, to_blobs
from storage.elastic_outbox import Outbox
from storage.migrations import MIGRATIONS
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app

SHOPPER, OTHER = 12345, 777
BIG = 9_000_000_001  # integer ids need not be dense: a shop's own numbers


def _write_version_6_store(path, encoder, thresholds, now) -> list[int]:
    """Exactly the tables and rows of schema version 6, written with integer ids as that code wrote them."""
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP)")
    for version, statements in enumerate(MIGRATIONS[:6], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, current_localtimestamp())", [version])
    ids = [100 + i for i in range(len(small_catalog()) - 1)] + [BIG]
    for pid, p in zip(ids, small_catalog(), strict=True):
        product = Product(pid, p["name"], p["merchant"], tuple(p["category_path"]), p["color"], p["price"])
        text = product_text(product, thresholds)
        digest = text_hash(encoder.model, text)
        conn.execute(
            "INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, true, ?, ?, ?, ?)",
            [pid, product.name, product.merchant, list(product.category_path), product.color, product.price,
             now - timedelta(days=30), now - timedelta(days=1), text, digest],
        )
        conn.execute("INSERT INTO embeddings VALUES (?, ?)", [digest, to_blobs(encoder.encode([text]))[0]])
    for i, (customer, pid, name) in enumerate([
        (SHOPPER, ids[0], "product_clicked"), (SHOPPER, ids[1], "product_purchased"),
        (OTHER, BIG, "product_added_to_cart"), (OTHER, ids[2], "product_clicked"),
    ]):
        ts = now - timedelta(minutes=10 - i)
        conn.execute("INSERT INTO events (customer_id, product_id, event_name, ts, received_at) VALUES (?, ?, ?, ?, ?)",
                     [customer, pid, name, ts, ts])
    conn.execute("INSERT INTO purchases VALUES (?, ?)", [SHOPPER, [ids[1]]])
    vector = np.zeros((1, 384), np.float32)
    vector[0, 0] = 1.0
    conn.execute("INSERT INTO user_vectors VALUES (?, ?, 'mean', ?, ?)", [SHOPPER, to_blobs(vector)[0], now, now])
    for mid, (customer, pid) in enumerate([(OTHER, ids[2]), (OTHER, 424242)], start=1):  # 424242: not a product
        body = {"customer_id": customer, "product_id": pid, "event_name": "product_clicked",
                "timestamp": now.isoformat()}
        conn.execute("INSERT INTO queue_messages VALUES (?, ?, ?, ?, ?, ?, 0, NULL, NULL, NULL)",
                     [mid, mid, customer, json.dumps(body), now, now])
    conn.execute("SELECT nextval('queue_seq') FROM range(2)")  # as the queue numbered those two
    conn.execute("INSERT INTO elastic_outbox VALUES ('product', ?, ?, 0, 0, NULL), ('user', ?, ?, 1, 2, 'boom')",
                 [BIG, now, SHOPPER, now])
    conn.close()
    return ids


def test_a_version_6_store_answers_under_its_old_ids(tmp_path, encoder) -> None:
    config = load_config(overrides={"server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
                                    "realtime": {"receive_wait_seconds": 0.2}})
    now = now_utc()
    (tmp_path / "data").mkdir()
    ids = _write_version_6_store(tmp_path / "data" / "appliance.duckdb", encoder, config.catalog.tier_thresholds,
                                 now)

    db = Database(tmp_path / "data" / "appliance.duckdb")
    try:
        assert db.schema_version == len(MIGRATIONS)
        assert db.read("SELECT count(*), count(*) FILTER (WHERE ext = key::VARCHAR) FROM product_ids")[0] == (
            len(ids) + 1,) * 2  # the catalog and the unknown product of a queued body
        assert db.read("SELECT ext FROM customer_ids ORDER BY key") == [(str(OTHER),), (str(SHOPPER),)]
        assert db.read("SELECT kind, item_id, attempts FROM elastic_outbox ORDER BY kind") == [
            ("product", str(BIG), 0), ("user", str(SHOPPER), 2)]
        assert db.read("SELECT group_id FROM queue_messages ORDER BY message_id") == [(str(OTHER),)] * 2
        Outbox(db).mark("user", [str(SHOPPER), "anon-1"], now)  # the copied table keeps its key: a mark bumps
        assert db.read("SELECT item_id, generation FROM elastic_outbox WHERE kind = 'user' ORDER BY 1") == [
            (str(SHOPPER), 2), ("anon-1", 0)]
    finally:
        db.close()

    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        wait_embedded(client)
        assert client.get(f"/products/{BIG}").json()["product"]["product_id"] == str(BIG)
        assert client.get(f"/products/{ids[0]}/similar", params={"k": 2}).status_code == 200

        feed = client.get(f"/customers/{SHOPPER}/feed", params={"per_page": 20}).json()
        assert feed["customer_id"] == str(SHOPPER) and feed["personalized"]  # the stored vector serves
        assert str(ids[1]) not in [i["product"]["product_id"] for i in feed["items"]]  # the stored purchase
        assert {i["product"]["product_id"] for i in feed["items"]} <= {str(i) for i in ids}

        # the queued old bodies: one processed (the shopper gets a vector), one dead-lettered as before
        wait_until(lambda: client.get("/queue").json()["processed"] >= 1, what="the old queued message")
        wait_until(lambda: client.get("/queue").json()["dead_lettered"] == 1, what="the unknown product")
        (dead,) = client.get("/queue/dead-letter").json()
        assert dead["reason"] == "unknown product 424242" and dead["body"]["customer_id"] == OTHER
        other = client.get(f"/customers/{OTHER}/feed").json()
        assert other["personalized"]

        # new ids live beside the old ones; an integer id now is the same shopper as before
        client.post("/events", json={"customer_id": str(SHOPPER), "product_id": "85123A",
                                     "event_name": "product_viewed"})
        services = client.app.state.services
        assert services.ids.customers.key(str(SHOPPER)) == SHOPPER
        assert services.ids.products.key("85123A") == BIG + 1  # new keys start above the largest old one
        assert services.db.read("SELECT count(*) FROM events WHERE customer_id = ?", [SHOPPER])[0][0] == 3
        erased = client.delete(f"/customers/{OTHER}").json()
        assert (erased["events"], erased["vectors"]) == (2, 1)
