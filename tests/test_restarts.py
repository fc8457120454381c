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

    def vectors(self, changed_since=None):
        out = super().vectors(changed_since)
        if self.service and not self.deleting:
            self.deleting = threading.Thread(target=self.service.delete, args=(1,))
            self.deleting.start()
            self.deleting.join(0.5)  # without the mirror's lock the delete is over before the sync adds its read
        return out


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
