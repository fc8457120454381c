"""DuckDB store and hnswlib index against real files."""

from datetime import datetime, timedelta

import numpy as np
import pytest

from appliance.config import load_config
from appliance.errors import StoreLocked
from appliance.text import product_text, text_hash
from jobs.indexing import CatalogIndexer
from storage.catalog import CatalogStore
from storage.db import Database
from storage.migrations import SCHEMA_VERSION
from storage.vectors import VectorIndex
from tests.helpers import product

T0 = datetime(2026, 3, 1)
TIERS = (25.0, 100.0, 300.0)


def _lines(products):
    texts = [product_text(p, TIERS) for p in products]
    return texts, [text_hash("m", t) for t in texts]


def test_schema_is_migrated_once_and_a_second_process_is_refused(tmp_path) -> None:
    db = Database(tmp_path / "a.duckdb")
    assert db.schema_version == SCHEMA_VERSION
    db.close()
    db = Database(tmp_path / "a.duckdb")
    assert db.read("SELECT count(*) FROM schema_version")[0][0] == SCHEMA_VERSION
    import subprocess
    import sys

    code = "from storage.db import Database; import sys; Database(sys.argv[1])"
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.duckdb")], capture_output=True, text=True)
    assert other.returncode != 0 and StoreLocked.__name__ in other.stderr
    assert "is the appliance server running" in other.stderr
    db.close()


def test_upsert_counts_and_pending_lines(tmp_path) -> None:
    store = CatalogStore(Database(tmp_path / "a.duckdb"))
    products = [product(i, f"Thing {i}", created_at=T0 if i == 1 else None) for i in range(1, 6)]
    texts, hashes = _lines(products)
    first = store.upsert(products, texts, hashes, T0)
    assert (first.created, first.updated, first.unchanged, first.to_embed) == (5, 0, 0, 5)
    again = store.upsert(products, texts, hashes, T0)
    assert (again.created, again.updated, again.unchanged, again.to_embed) == (0, 0, 5, 0)
    store.save_vectors(hashes[:2], np.ones((2, 4), dtype=np.float32))
    assert store.pending_count() == 3
    stock = [product(1, "Thing 1", in_stock=False)]
    changed = store.upsert(stock, *_lines(stock), T0)
    assert (changed.updated, changed.to_embed) == (1, 0)  # same line: the cached vector serves
    assert store.get(1).embedded and not store.get(1).product.in_stock
    assert store.get(1).product.created_at == T0  # kept from the first insert
    assert store.get(2).product.created_at is None  # none given: its arrival is unknown (never a new arrival)


def test_one_upsert_creates_new_products_and_updates_changed_ones_in_place(tmp_path) -> None:
    db = Database(tmp_path / "a.duckdb")
    store = CatalogStore(db)
    first = [product(i, f"Thing {i}", price=10.0, created_at=T0) for i in range(1, 4)]
    store.upsert(first, *_lines(first), T0)
    later = T0 + timedelta(hours=1)
    mixed = [product(1, "Thing 1", price=12.5, in_stock=False, category_path=("Home", "Pots")),  # edited
             product(2, "Thing 2", price=10.0, created_at=T0),  # the same row
             product(4, "Thing 4", price=3.0)]  # new
    texts, hashes = _lines(mixed)
    result = store.upsert(mixed, texts, hashes, later)
    assert (result.created, result.updated, result.unchanged, sorted(result.changed_ids)) == (1, 1, 1, [1, 4])
    edited = store.get(1)
    assert (edited.product.price, edited.product.in_stock, edited.product.category_path) == (12.5, False,
                                                                                             ("Home", "Pots"))
    assert edited.product.created_at == T0 and edited.updated_at == later and edited.text == texts[0]
    assert store.get(2).updated_at == T0 and store.get(4).product.price == 3.0
    assert db.read("SELECT count(*), count(DISTINCT product_id) FROM products")[0] == (4, 4)
    assert db.read("SELECT text_hash FROM products WHERE product_id = 1")[0][0] == hashes[0]


def test_lookup_returns_the_vectors_held_across_chunks_and_leaves_out_the_others(tmp_path) -> None:
    index = VectorIndex(tmp_path / "p.hnsw", 8, load_config().index)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(150, 8)).astype(np.float32)
    index.upsert(np.arange(1, 151), vectors)
    index.remove([7, 140])
    asked = np.array([*range(1, 151), 999])  # more than one chunk, two deleted ids and an unknown one
    found = index.lookup(asked)
    assert sorted(found) == [i for i in range(1, 151) if i not in (7, 140)]
    for i in (1, 64, 65, 150):
        np.testing.assert_allclose(found[i], index.get(np.array([i]))[0], atol=1e-6)
    assert index.lookup(np.array([7, 140])) == {}


def test_index_saves_atomically_and_is_rebuilt_when_unreadable_or_out_of_step(tmp_path, encoder) -> None:
    config = load_config()
    store = CatalogStore(Database(tmp_path / "a.duckdb"))
    products = [product(i, name) for i, name in enumerate(["Red wool scarf", "Blue running shoe", "Steel pan"], 1)]
    store.upsert(products, *_lines(products), T0)
    index = VectorIndex(tmp_path / "p.hnsw", 384, config.index)
    indexer = CatalogIndexer(store, encoder, index, 16)
    assert indexer.embed_pending() == 3
    assert indexer.reconcile() == "rebuilt"  # there was no file
    assert sorted(index.ids().tolist()) == [1, 2, 3]
    assert indexer.sync_index() == 0  # nothing changed since: nothing is inserted again
    assert not list(tmp_path.glob("*.tmp"))
    files = (tmp_path / "p.hnsw", tmp_path / "p.hnsw.json")
    written = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]  # a save replaces both (a new inode)
    fresh = VectorIndex(tmp_path / "p.hnsw", 384, config.index)
    assert CatalogIndexer(store, encoder, fresh, 16).reconcile() == "loaded"
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files] == written  # nothing changed: not rewritten
    np.testing.assert_allclose(fresh.get(np.array([2])), index.get(np.array([2])), atol=1e-6)
    (tmp_path / "p.hnsw").write_bytes(b"not an index")
    broken = VectorIndex(tmp_path / "p.hnsw", 384, config.index)
    assert CatalogIndexer(store, encoder, broken, 16).reconcile() == "rebuilt"
    assert len(broken) == 3
    store.delete(3)  # DuckDB changed behind the saved index
    stale = VectorIndex(tmp_path / "p.hnsw", 384, config.index)
    assert CatalogIndexer(store, encoder, stale, 16).reconcile() == "rebuilt"
    assert sorted(stale.ids().tolist()) == [1, 2]
    waiting = [product(4, "Linen apron")]  # stored, not embedded yet: no vector, so not an id the index must hold
    store.upsert(waiting, *_lines(waiting), T0)
    assert store.vector_ids().tolist() == store.vectors(None)[0].tolist() == [1, 2]


def test_index_query_with_a_filter_that_leaves_fewer_than_k(tmp_path) -> None:
    index = VectorIndex(tmp_path / "p.hnsw", 8, load_config().index)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    index.upsert(np.arange(1, 7), vectors)
    labels, sims = index.query(vectors[0], 6, accept=lambda label: label % 2 == 1)
    assert sorted(labels.tolist()) == [1, 3, 5]
    assert labels[0] == 1 and sims[0] == pytest.approx(1.0, abs=1e-5)


def test_index_query_searches_with_the_ef_asked_raised_to_k(tmp_path) -> None:
    config = load_config().index
    index = VectorIndex(tmp_path / "p.hnsw", 8, config)
    vectors = np.random.default_rng(2).normal(size=(300, 8)).astype(np.float32)
    index.upsert(np.arange(1, 301), vectors)
    searched = []
    for k, ef in ((5, 40), (50, 10), (5, None)):
        labels, _ = index.query(vectors[0], k, ef=ef)
        searched.append(index._index.ef)
        assert len(labels) == k and labels[0] == 1
    assert searched == [40, 50, config.ef_search]


def test_purchases_are_kept_per_customer_and_erased_with_them(db) -> None:
    from appliance.types import Event
    from storage.events import EventStore

    events = EventStore(db)
    bought = [Event(1, 10, "product_purchased", T0), Event(1, 11, "product_purchased", T0),
              Event(2, 10, "product_purchased", T0), Event(1, 12, "product_clicked", T0)]
    events.append(bought, T0)
    events.append([Event(1, 10, "product_purchased", T0), Event(1, 13, "product_purchased", T0)], T0)
    assert events.purchased(1) == {10, 11, 13}
    assert events.purchased(2) == {10} and events.purchased(3) == set()
    with db.write() as cur:
        assert events.erase_in(cur, 1) == 5
    assert events.purchased(1) == set() and events.purchased(2) == {10}


def test_user_vector_cache_follows_every_write(db) -> None:
    from storage.users import UserStore

    users = UserStore(db, cache_size=2)
    one = np.ones((1, 4), np.float32) / 2
    assert users.get(7) is None  # remembered as absent
    users.save([7], one, "mean", [T0], T0)
    assert users.get(7).model_version == "mean"
    users.save([7], one * -1, "v2", [T0], T0)
    assert users.get(7).model_version == "v2" and users.get(7).vector[0] == -0.5
    fresh = UserStore(db)  # what is on disk agrees with what the cache served
    assert fresh.get(7).model_version == "v2"
    assert users.expire(T0 + timedelta(seconds=1)) == [7]
    assert users.get(7) is None
    users.save([1, 2, 3], np.ones((3, 4), np.float32), "mean", [T0] * 3, T0)
    assert len(users._cache) == 2 and users.get(1) is not None  # bounded; a miss reads DuckDB
    users.save([2], np.zeros((1, 4), np.float32), "mean", [T0], T0, gone=[1])  # one transaction: 2 saved, 1 dropped
    assert users.get(1) is None and UserStore(db).get(1) is None and UserStore(db).get(2).vector[0] == 0


def test_warming_the_vector_cache_skips_only_the_customers_written_while_it_read(db) -> None:
    """At start-up the consumer may be working through a backlog while the feeds warm: the warm must not give
    up (every personal feed would then read DuckDB), nor bring back an older vector than the one just saved."""
    from storage.users import UserStore

    UserStore(db).save([1, 2, 3], np.ones((3, 4), np.float32) / 2, "old", [T0] * 3, T0)
    users = UserStore(db)
    read = db.read

    def read_while_the_consumer_writes(sql, params=None):
        rows = read(sql, params)
        if "ORDER BY last_event_at DESC" in sql:  # the warm's read: writes land before it fills the cache
            users.save([2], np.full((1, 4), -0.5, np.float32), "new", [T0], T0)
            users.forget([3])
        return rows

    db.read = read_while_the_consumer_writes
    assert sorted(users.warm()) == [1, 2, 3]
    db.read = read
    assert users.cached(1) == (True, users.get(1)) and users.get(1).model_version == "old"  # warmed
    assert users.cached(2)[1].model_version == "new"  # the newer write stays
    assert users.cached(3) == (False, None)  # forgotten meanwhile: not warmed from the older read
