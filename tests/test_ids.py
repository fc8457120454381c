"""The shop's ids: the id rules, the mapping store (real DuckDB), merging two ids of one shopper without HTTP."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest

from appliance.errors import InvalidInput
from appliance.ids import shop_id
from appliance.types import Event, now_utc
from jobs.identity import IdentityParts, merge_customers
from storage.db import Database
from storage.ids import IdMap
from web.services import build_services


@pytest.mark.parametrize("value, normal", [
    ("85123A", "85123A"), ("anon-7f3a", "anon-7f3a"), (12345, "12345"), ("12345", "12345"), ("é€", "é€"),
    ("x" * 128, "x" * 128), (0, "0"),
])
def test_good_ids_are_normalised(value, normal) -> None:
    assert shop_id(value, "customer_id") == normal


@pytest.mark.parametrize("value", [
    "", "x" * 129, "a b", "a\tb", "abc\n", "a/b", "a\x00b", "a\x85b", "\u00a0", 1.5, True, None, ["1"],
])
def test_bad_ids_name_the_field(value) -> None:
    with pytest.raises(InvalidInput) as info:
        shop_id(value, "product_id")
    assert info.value.field == "product_id"


def test_keys_are_dense_in_arrival_order_and_survive_a_reopen(tmp_path) -> None:
    db = Database(tmp_path / "a.duckdb")
    products = IdMap(db, "product")
    assert products.keys(["85123A", "22423"]) == [None, None]  # without create nothing is written
    assert len(products) == 0
    assert products.keys(["85123A", "22423", "85123A"], create=True) == [1, 2, 1]
    assert products.keys(["x", "22423"], create=True) == [3, 2]
    assert products.exts([2, 3, 99]) == ["22423", "x", None]
    assert products.forget([1, 99]) == 1
    assert products.key("85123A") is None
    assert products.keys(["85123A"], create=True) == [4]  # a forgotten id comes back under a new key
    db.close()
    db = Database(tmp_path / "a.duckdb")
    again = IdMap(db, "product")
    assert (again.key("85123A"), again.key("22423"), again.ext(3), len(again)) == (4, 2, "x", 3)
    assert IdMap(db, "customer").keys(["85123A"], create=True) == [1]  # each kind has its own keys
    db.close()


def test_concurrent_creators_agree_on_one_key_per_id(db) -> None:
    ids = IdMap(db, "customer")
    names = [f"anon-{i}" for i in range(200)]
    results: list[list[int | None]] = []

    def create(order: list[str]) -> None:
        got = dict(zip(order, ids.keys(order, create=True), strict=True))
        results.append([got[n] for n in names])

    rng = np.random.default_rng(1)
    threads = [threading.Thread(target=create, args=(list(rng.permutation(names)),)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 5 and all(r == results[0] for r in results)
    assert len(set(results[0])) == 200
    assert db.read("SELECT count(*), count(DISTINCT key) FROM customer_ids")[0] == (200, 200)


def test_merge_moves_history_drops_the_anonymous_vector_and_is_idempotent(tmp_path, encoder) -> None:
    from appliance.config import load_config

    config = load_config(overrides={"server": {"data_dir": str(tmp_path), "load_demo": False}})
    services = build_services(config, encoder)
    try:
        ids, now = services.ids, now_utc()
        p1, p2, p3 = ids.products.keys(["85123A", "22423", "47566"], create=True)
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((3, config.encoder.dim)).astype(np.float32)
        services.index.upsert(np.array([p1, p2, p3]), vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        anon, known = ids.customers.keys(["anon-7f3a", "c-1001"], create=True)
        services.events.append([
            Event(anon, p1, "product_clicked", now - timedelta(minutes=3)),
            Event(anon, p2, "product_purchased", now - timedelta(minutes=2)),
            Event(known, p3, "product_purchased", now - timedelta(minutes=1)),
        ], now)
        services.queue.send({"customer_id": "anon-7f3a", "product_id": "85123A", "event_name": "product_clicked"})
        assert services.updater.update([anon, known]) == {anon: "mean", known: "mean"}
        services.user_mirror.sync()
        assert services.users.get(anon) is not None and anon in services.user_mirror.index.lookup(np.array([anon]))
        before = services.users.get(known).vector

        parts = IdentityParts(services.db, ids, services.events, services.queue, services.updater,
                              services.impressions, services.widgets.recent)
        merged = merge_customers(parts, "c-1001", "anon-7f3a")
        assert (merged.events, merged.purchases, merged.queued_messages, merged.vectors, merged.vector) == (
            2, 1, 1, 1, "mean")
        assert ids.customers.key("anon-7f3a") is None  # the anonymous id is gone
        assert services.db.read("SELECT count(*) FROM events WHERE customer_id = ?", [anon])[0][0] == 0
        assert services.events.purchased(known) == {p2, p3}
        assert services.users.get(anon) is None and services.user_mirror.index.lookup(np.array([anon])) == {}
        assert not np.allclose(services.users.get(known).vector, before)  # recomputed from 3 events now
        assert services.queue.stats().depth == 0

        again = merge_customers(parts, "c-1001", "anon-7f3a")
        assert (again.events, again.purchases, again.queued_messages, again.vectors) == (0, 0, 0, 0)
        assert services.events.purchased(known) == {p2, p3}
        with pytest.raises(InvalidInput) as info:
            merge_customers(parts, "c-1001", "c-1001")
        assert info.value.field == "anonymous_id"

        # the known shopper may be new: it is created and gets the history
        ids.customers.keys(["anon-2"], create=True)
        services.events.append([Event(ids.customers.key("anon-2"), p1, "product_viewed", now)], now)
        fresh = merge_customers(parts, "c-2002", "anon-2")
        assert fresh.events == 1 and ids.customers.key("c-2002") is not None
    finally:
        services.close()
