"""The scheduled jobs as plain functions (the scheduler and the CLI both call them)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import numpy as np

from appliance.config import Config
from appliance.recommender import Recommender
from jobs.indexing import CatalogIndexer, IndexMirror
from jobs.realtime import ServingModel, UserVectorUpdater
from jobs.training import load_training_data, train_and_decide
from storage.catalog import CatalogStore
from storage.db import Database
from storage.elastic import product_document
from storage.elastic_outbox import ElasticSync, NoopElasticSync
from storage.events import EventStore
from storage.ids import ShopIds
from storage.impressions import ImpressionStore
from storage.models import ModelRegistry
from storage.users import UserStore
from storage.vectors import VectorIndex

log = logging.getLogger("appliance.jobs")
COMPACT_SHARE = 0.1  # rebuild an index once this share of its slots are deleted


def retrain(
    config: Config, events: EventStore, catalog: CatalogStore, registry: ModelRegistry, serving: ServingModel,
    updater: UserVectorUpdater, clock: Callable[[], datetime],
) -> str:
    """Train on the last `retrain_window_days` of data (counted back from the newest event, so imported history
    trains too), evaluate, promote only if better; then recompute the shoppers' vectors with the new model."""
    newest = events.newest()
    since = newest - timedelta(days=config.jobs.retrain_window_days) if newest else None
    data = load_training_data(events, catalog, since)
    model, outcome = train_and_decide(data, config, registry, serving.get().model, since=since)
    registry.prune(config.jobs.keep_models)
    if not outcome.promoted:
        return f"{outcome.version} rejected: {outcome.reason}"
    serving.set(model, outcome.version, registry.load(outcome.version)[1].as_dict())
    refreshed = updater.refresh()
    return f"{outcome.version} promoted ({outcome.reason}); {refreshed} shoppers' vectors recomputed"


def prune(
    config: Config, db: Database, events: EventStore, users: UserStore, user_mirror: IndexMirror,
    clock: Callable[[], datetime], impressions: ImpressionStore,
) -> str:
    """Drop vectors whose history left the serving window (when one is set), the event ids older than the
    dedupe window, raw events and impressions older than `jobs.retention_days` (when set; 0 keeps them forever);
    checkpoint DuckDB. Says what it removed."""
    now = clock()
    parts = []
    if config.realtime.history_window_hours > 0:
        expired = users.expire(now - timedelta(hours=config.realtime.history_window_hours))
        user_mirror.remove(expired)  # under the sync's lock, as every change of the index (see `IndexMirror.compact`)
        parts.append(f"{len(expired)} user vectors past the {config.realtime.history_window_hours:g} h window expired")
    window = config.events.dedupe_window_hours
    forgotten = events.forget_keys(now - timedelta(hours=window))
    if forgotten:
        parts.append(f"{forgotten} event ids older than the {window:g} h dedupe window forgotten")
    if config.jobs.retention_days > 0:
        retention = now - timedelta(days=config.jobs.retention_days)
        dropped = events.delete_before(retention)
        shown = impressions.delete_before(retention)
        parts.append(f"{dropped} events and {shown} impressions older than {config.jobs.retention_days:g} days deleted")
    if not db.checkpoint():
        parts.append("checkpoint deferred to the next run: other writes were in progress")
    return "; ".join(parts) or "nothing to prune: no serving window, events kept forever (jobs.retention_days = 0)"


def serving_prior(
    events: EventStore, serving: ServingModel, config: Config, now: datetime
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The serving tower's prior as it was trained: (product ids, popularity with the half-life recorded in its
    training report, cold quantile, cold share); the popularity job computes it beside the feed's list. A model
    trained before the report recorded its half-life (or none at all) gets `training.prior_half_life_hours`."""
    current = serving.get()
    trained = ((current.meta or {}).get("training") or {}).get("prior_half_life_hours")
    half_life = float(trained) if trained else config.training.prior_half_life_hours
    model = current.model
    cold_quantile, cold_share = (float(model.cold_quantile), float(model.cold_share)) if model is not None else (0, 0)
    ids, scores = events.popularity(now, half_life, config.events.weights)
    return ids, scores, cold_quantile, cold_share


def popularity(recommender: Recommender) -> str:
    return f"popularity recomputed: {recommender.refresh_popularity()} products with events"


def reindex(indexer: CatalogIndexer, user_mirror: IndexMirror) -> str:
    """Embed changed products; rebuild an index from DuckDB when deletions pile up; save the user index's changes
    (appended to its log: a crash then loses at most this interval's, which the start-up sync brings back)."""
    embedded = indexer.run_once()
    user_mirror.index.save_if_dirty()
    compacted = [name for name, mirror in (("products", indexer.mirror), ("users", user_mirror)) if _compact(mirror)]
    return f"{embedded} lines embedded; compacted: {', '.join(compacted) or 'none'}"


def _compact(mirror: IndexMirror) -> bool:
    index = mirror.index
    if index.deleted <= COMPACT_SHARE * max(len(index) + index.deleted, 1):
        return False
    mirror.compact()
    return True


def sync(
    elastic: ElasticSync | NoopElasticSync, recommender: Recommender, products: VectorIndex, users: UserStore,
    ids: ShopIds,
) -> str:
    """Push pending product and user vectors to Elasticsearch (a no-op when it is not configured).

    The outbox holds the shop's ids (the documents' _id); an id no longer mapped is gone (its document deleted).
    User vectors come from DuckDB, not from the hnswlib user index, which trails it by up to
    `realtime.user_index_sync_seconds`: a shopper marked for sending is never sent as a deletion for want of a sync."""
    if not elastic.enabled:
        return "elasticsearch is not configured"

    def load_products(exts: Sequence[str]) -> dict:
        view = recommender.view()
        _, scores = recommender.popularity_of(view)
        keys = dict(zip(exts, ids.products.keys(exts), strict=True))
        vectors = products.lookup(np.asarray([k for k in keys.values() if k is not None], dtype=np.int64))
        return {
            e: (vectors.get(k), product_document(view.products[k], scores[view.row[k]], product_id=e))
            for e, k in keys.items() if k in view.products
        }

    def load_users(exts: Sequence[str]) -> dict:
        stored = {e: users.get(k) for e, k in zip(exts, ids.customers.keys(exts), strict=True) if k is not None}
        return {e: user.vector for e, user in stored.items() if user is not None}

    result = elastic.sync_once(load_products, load_users)
    return f"sent {result.acked}, failed {result.failed}, waiting {result.not_ready}" + (
        f", outage: {result.error}" if result.outage else "")
