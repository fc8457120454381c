"""The composition root's parts list: builds and connects every long-lived object, and closes them in order."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from appliance.config import Config
from appliance.demo import generate_demo
from appliance.encoder import Encoder
from appliance.recommender import Recommender
from appliance.types import now_utc
from jobs.catalog import CatalogService
from jobs.indexing import BackgroundIndexer, CatalogIndexer
from storage.catalog import CatalogStore
from storage.db import Database
from storage.events import EventStore
from storage.vectors import VectorIndex

log = logging.getLogger("appliance")


@dataclass
class Services:
    config: Config
    db: Database
    catalog: CatalogService
    events: EventStore
    encoder: Encoder
    index: VectorIndex
    indexer: CatalogIndexer
    recommender: Recommender
    background: BackgroundIndexer | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    startup_error: str | None = None

    def close(self) -> None:
        """Stop background work, save the index, close DuckDB: in that order."""
        if self.background:
            self.background.stop()
        try:
            self.index.save_if_dirty()
        finally:
            self.db.close()


def build_services(config: Config, encoder: Encoder | None = None) -> Services:
    """Open the store and wire the parts; no model loading and no embedding happen here."""
    torch.set_num_threads(config.server.torch_threads)
    db = Database(config.data_path / "appliance.duckdb")
    try:
        store = CatalogStore(db)
        events = EventStore(db)
        encoder = encoder or Encoder(config.encoder.model, config.encoder.dim, config.encoder.batch_size)
        index = VectorIndex(config.data_path / "products.hnsw", config.encoder.dim, config.index)
        indexer = CatalogIndexer(store, encoder, index, config.encoder.background_batch)
        weights, half_life = config.events.weights, config.feed.popularity_half_life_hours
        recommender = Recommender(
            store.all,
            lambda now: events.popularity(now, half_life, weights),
            now_utc,
            config.feed.popularity_refresh_seconds,
        )
        catalog = CatalogService(store, indexer, config.catalog.tier_thresholds, recommender.invalidate)
    except BaseException:
        db.close()
        raise
    return Services(config, db, catalog, events, encoder, index, indexer, recommender)


def load_demo(services: Services) -> bool:
    """Fill an empty store with the generated demo shop (events end now). False if the store had products."""
    if services.catalog.store.count():
        return False
    demo = services.config.demo
    now = now_utc()
    shop = generate_demo(demo.seed, demo.products, demo.customers, demo.days, now)
    services.catalog.upsert(shop.products, now - timedelta(seconds=1), embed_now=False)
    services.events.append(shop.events, now)
    log.info("loaded the demo shop: %d products, %d events", len(shop.products), len(shop.events))
    return True


def start(services: Services) -> None:
    """Start-up work that may take long (run off the event loop): demo, index, model, background embedding."""
    try:
        if services.config.server.load_demo:
            load_demo(services)
        state = services.indexer.reconcile()
        log.info("product index %s: %d vectors", state, len(services.index))
        services.encoder.load()
        services.background = BackgroundIndexer(services.indexer, _log_error)
        services.background.start()
        services.background.kick()
        services.ready.set()
    except Exception as exc:
        services.startup_error = f"{type(exc).__name__}: {exc}"
        log.exception("start-up failed")
        raise


def _log_error(exc: BaseException) -> None:
    log.error("background indexing failed: %s", exc, exc_info=exc)
