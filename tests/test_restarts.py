"""Work interrupted or raced: a demo whose first training was killed trains at the next start; a product
created and deleted at once leaves no vector behind."""

from __future__ import annotations

import threading

from litestar.testing import TestClient

from appliance.config import load_config
from appliance.types import now_utc
from jobs.catalog import CatalogService
from jobs.indexing import CatalogIndexer
from storage.catalog import CatalogStore
from storage.vectors import VectorIndex
from tests.helpers import LOCAL, product, wait_until
from web.app import create_app

DEMO = {"products": 60, "customers": 5, "days": 1}


def test_a_demo_whose_first_training_never_ran_trains_at_the_next_start(tmp_path, encoder):
    data = str(tmp_path / "data")
    untrained = load_config(overrides={"server": {"data_dir": data}, "demo": {**DEMO, "train": False}})
    with TestClient(create_app(untrained, encoder=encoder), base_url=LOCAL) as client:  # as if killed before training
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.app.state.services.jobs.runs.last("retrain") is None
    config = load_config(overrides={"server": {"data_dir": data}, "demo": DEMO})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        runs = client.app.state.services.jobs.runs
        wait_until(lambda: runs.last("retrain") is not None, timeout=300, what="the demo's first training")
        assert runs.last("retrain").outcome == "ok"
    # trained once: not again at each start
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert len(client.app.state.services.jobs.runs.history("retrain", 10)) == 1


class DeletedWhileSyncing(CatalogStore):
    """The real store; while a sync reads the vectors, another thread deletes a product (the race, made certain)."""

    service: CatalogService | None = None
    deleting: threading.Thread | None = None

    def vector_pages(self, changed_since=None, rows=8192):
        for page in super().vector_pages(changed_since, rows):
            if self.service and not self.deleting:
                self.deleting = threading.Thread(target=self.service.delete, args=(1,))
                self.deleting.start()
                self.deleting.join(0.5)  # without the mirror's lock the delete is over before the sync adds its read
            yield page


def test_a_product_deleted_during_an_index_sync_does_not_come_back(db, tmp_path, encoder):
    config = load_config()
    store = DeletedWhileSyncing(db)
    indexer = CatalogIndexer(store, encoder, VectorIndex(tmp_path / "p.hnsw", 384, config.index), 16)
    service = CatalogService(store, indexer, config.catalog.tier_thresholds)
    service.upsert([product(1, "Red wool scarf"), product(2, "Steel pan")], now_utc(), embed_now=False)
    indexer.embed_pending()
    store.service = service
    indexer.sync_index()
    store.deleting.join()
    assert store.count() == 1
    assert indexer.index.ids().tolist() == [2]


def test_a_reindex_pass_beside_the_background_indexer_encodes_each_line_once(db, tmp_path, encoder):
    """The reindex job runs `run_once` every 10 minutes, also while the background indexer works through a bulk
    upload: both asked for the same oldest pending lines and encoded each of them twice."""
    config = load_config()
    encoded: list[str] = []

    class Counting:  # the shared encoder, counting the lines it is asked for
        model = encoder.model

        def encode(self, texts):
            encoded.extend(texts)
            return encoder.encode(texts)

    store = CatalogStore(db)
    indexer = CatalogIndexer(store, Counting(), VectorIndex(tmp_path / "p.hnsw", 384, config.index), 8)
    service = CatalogService(store, indexer, config.catalog.tier_thresholds)
    service.upsert([product(i, f"Lamp model {i}") for i in range(1, 41)], now_utc(), embed_now=False)
    start = threading.Barrier(2)
    passes = [threading.Thread(target=lambda: (start.wait(), indexer.embed_pending())) for _ in range(2)]
    for t in passes:
        t.start()
    for t in passes:
        t.join()
    assert store.pending_count() == 0
    assert len(encoded) == len(set(encoded)) == 40


def test_a_long_embedding_pass_indexes_and_saves_what_it_embedded_every_sync_every_lines(db, tmp_path, encoder):
    """A bulk upload's products are searchable while the rest are embedded, and its index is saved as it grows:
    a pass synced only when the backlog was empty (at the end of a 50k upload: its first, whole save copied the
    whole graph at once)."""
    config = load_config()
    store = CatalogStore(db)
    seen: list[tuple[int, bool]] = []  # (index size, file on disk) after each batch

    indexer = CatalogIndexer(store, encoder, VectorIndex(tmp_path / "p.hnsw", 384, config.index), 8, sync_every=16)
    service = CatalogService(store, indexer, config.catalog.tier_thresholds)
    service.upsert([product(i, f"Lamp model {i}") for i in range(1, 41)], now_utc(), embed_now=False)
    indexer.embed_pending(progress=lambda n: seen.append((len(indexer.index), indexer.index.path.exists())))
    assert [size for size, _ in seen] == [0, 16, 16, 32, 32]  # synced after 16 and 32 lines, 8 still to sync
    assert [saved for _, saved in seen] == [False, True, True, True, True]
    indexer.sync_index()
    assert sorted(indexer.index.ids().tolist()) == list(range(1, 41))


class ChangedWhileCompacting(CatalogStore):
    """The real store; while a compaction reads every vector aside, `during` runs (in another thread: a query, an
    edit that embeds at once, a delete)."""

    during = None

    def vector_pages(self, changed_since=None, rows=8192):
        if changed_since is None and self.during:
            during, self.during = self.during, None
            during()
        yield from super().vector_pages(changed_since, rows)


def test_a_compaction_serves_queries_and_keeps_the_changes_made_while_it_rebuilds(db, tmp_path, encoder):
    config = load_config()
    store = ChangedWhileCompacting(db)
    indexer = CatalogIndexer(store, encoder, VectorIndex(tmp_path / "p.hnsw", 384, config.index), 16)
    service = CatalogService(store, indexer, config.catalog.tier_thresholds)
    service.upsert([product(i, f"Wool scarf no. {i}") for i in range(1, 31)], now_utc(), embed_now=True)
    for pid in range(1, 6):
        service.delete(pid)
    indexer.index.save()
    assert indexer.index.deleted == 5
    seen: dict[str, object] = {}

    def meanwhile() -> None:
        labels, _ = indexer.index.query(indexer.index.get([10])[0], 10)
        seen["labels"] = labels.tolist()
        service.upsert([product(99, "Steel frying pan")], now_utc(), embed_now=True)  # encoded and synced now
        service.delete(7)

    def during() -> None:
        worker = threading.Thread(target=meanwhile)
        worker.start()
        worker.join(60)
        seen["finished"] = not worker.is_alive()

    store.during = during
    indexer.mirror.compact()
    assert seen["finished"]  # neither the query nor the edit waited for the rebuild
    assert len(seen["labels"]) == 10 and seen["labels"][0] == 10  # the old index answered meanwhile
    ids = sorted(indexer.index.ids().tolist())
    assert ids == store.vector_ids().tolist() and 99 in ids and 7 not in ids and 1 not in ids
    reloaded = VectorIndex(tmp_path / "p.hnsw", 384, config.index)
    assert reloaded.load() is None and sorted(reloaded.ids().tolist()) == ids  # written whole, loads as it is
