"""The composition root's parts list: builds and connects every long-lived object, and closes them in order (their
start-up is web/startup.py)."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from appliance.config import Config
from appliance.encoder import Encoder
from appliance.recommender import FeedSettings, Recommender
from appliance.threads import Threads
from appliance.types import Event, now_utc
from appliance.widgets import Widgets
from jobs import upkeep
from jobs.attribution import ImpressionLog
from jobs.catalog import CatalogService
from jobs.edits import EditCommit
from jobs.erasure import CustomerEraser
from jobs.feed import Feeds
from jobs.indexing import BackgroundIndexer, CatalogIndexer, IndexMirror
from jobs.ingest import GroupCommit
from jobs.metrics import Metrics
from jobs.neighbour_lists import NeighbourLists
from jobs.queue import DurableQueue
from jobs.realtime import EventConsumer, ServingModel, UserVectorUpdater
from jobs.recent import RecentViews
from jobs.scheduler import Jobs, JobSpec
from jobs.sqs import SqsQueue, make_queue
from jobs.widget_memory import Memo
from jobs.widgets import WidgetParts, build_tables, most_popular
from jobs.widgets import refresh as refresh_widgets
from storage.baskets import BasketStore
from storage.catalog import CatalogStore
from storage.db import Database
from storage.elastic_outbox import ElasticSync, NoopElasticSync, make_elastic_sync
from storage.events import EventStore
from storage.ids import ShopIds
from storage.impressions import ImpressionStore
from storage.job_runs import JobRunStore
from storage.models import ModelRegistry
from storage.rules import RuleStore
from storage.users import UserStore
from storage.vectors import VectorIndex
from web.gauges import watch_state
from web.ids import exts
from web.queued import queued_event
from web.schemas import ProductOuts

PYTHON_FULL_PASS_THRESHOLD = gc.get_threshold()[2]  # the interpreter's own (10), restored at close


@dataclass
class Services:
    config: Config
    db: Database
    ids: ShopIds  # the shop's ids <-> the keys inside (web/ids.py translates with them)
    catalog: CatalogService
    events: EventStore
    encoder: Encoder
    index: VectorIndex
    indexer: CatalogIndexer
    recommender: Recommender
    users: UserStore
    user_mirror: IndexMirror
    queue: DurableQueue | SqsQueue
    serving: ServingModel
    models: ModelRegistry
    updater: UserVectorUpdater
    consumer: EventConsumer
    elastic: ElasticSync | NoopElasticSync
    jobs: Jobs
    eraser: CustomerEraser
    impressions: ImpressionLog
    metrics: Metrics
    feeds: Feeds
    product_out: ProductOuts
    widgets: WidgetParts  # bought together, related, trending, recently viewed
    ingest: GroupCommit  # POST /events' writes, committed in groups
    edits: EditCommit  # PUT /products/{id}'s writes, committed in groups
    background: BackgroundIndexer | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    startup_error: str | None = None
    closing: bool = False  # close() has begun: the start-up warm-up must not freeze objects any more
    freezing: threading.Lock = field(default_factory=threading.Lock)  # guards `closing` against gc.freeze()
    threads: Threads = field(default_factory=lambda: Threads("services"))  # feed-warm, demo-vectors

    def close(self) -> None:
        """Stop taking work, finish the batches in hand, save the indexes, close DuckDB: in that order. Every
        thread these services started is stopped or joined first (a bounded wait each; one that does not end
        is named in the log), so nothing of them touches the store once it is closed."""
        with self.freezing:
            self.closing = True
        self.jobs.stop()
        self.threads.close(30.0)  # the start-up warm-up and the demo's vectors stop between their steps
        self.ingest.close()  # the events already taken are committed; later ones are refused (503)
        self.edits.close()  # the same for edits
        self.queue.close()
        self.consumer.stop()
        self.widgets.lists.stop()
        self.widgets.widgets.close()
        self.recommender.close()
        if self.background:
            self.background.stop()
        try:
            self.impressions.close()
            self.index.save_if_dirty(whole=True)  # the logs folded into the files: the next start replays nothing
            self.user_mirror.index.save_if_dirty(whole=True)
        finally:
            self.db.close()
            release_collector()


def build_services(config: Config, encoder: Encoder | None = None) -> Services:
    """Open the store and wire the parts; no model loading and no embedding happen here."""
    torch.set_num_threads(config.server.torch_threads)
    sys.setswitchinterval(config.server.switch_interval_ms / 1000)  # process-wide, as torch's threads
    metrics = Metrics()
    db = Database(config.data_path / "appliance.duckdb")
    try:
        ids = ShopIds.open(db)
        store = CatalogStore(db)
        events = EventStore(db)
        encoder = encoder or Encoder(config.encoder.model, config.encoder.dim, config.encoder.batch_size)
        index = VectorIndex(config.data_path / "products.hnsw", config.encoder.dim, config.index)
        indexer = CatalogIndexer(store, encoder, index, config.encoder.background_batch, config.server.torch_threads)
        weights, half_life = config.events.weights, config.feed.popularity_half_life_hours
        feed = config.feed
        settings = FeedSettings(
            feed.personal_share, feed.new_share, feed.new_arrival_days, feed.personal_depth,
            feed.exclude_purchased, feed.snapshot_seconds, feed.snapshot_max, feed.candidate_cache,
            feed.personal_first_depth, config.widgets.max_in_row, config.widgets.diversity_by, feed.snapshot_depth,
            feed.snapshot_orders,
        )
        serving = ServingModel()
        rules = RuleStore(db)

        def nearest(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:  # the first lookup: its own ef
            return index.query_many(vectors, k, ef=feed.personal_first_ef if k <= feed.personal_first_depth else None)

        recommender = Recommender(
            store.all, lambda now: events.popularity(now, half_life, weights), nearest, now_utc,
            feed.popularity_refresh_seconds, settings, lambda now: upkeep.serving_prior(events, serving, config, now),
            rules.all,
        )
        elastic = make_elastic_sync(config.elasticsearch, db, config.encoder.dim)

        def catalog_changed(keys: Sequence[int]) -> None:
            recommender.apply_changes(keys, store.many)
            elastic.mark_products(exts(ids.products, keys))

        catalog = CatalogService(store, indexer, config.catalog.tier_thresholds, catalog_changed)
        users = UserStore(db)
        user_mirror = IndexMirror(
            VectorIndex(config.data_path / "users.hnsw", config.encoder.dim, config.index), users.vector_pages,
            users.vector_ids,
        )
        realtime = config.realtime
        queue = make_queue(config, db, on_outage=lambda cause: metrics.queue_outages.labels("outbox", cause).inc())
        feeds = Feeds(users, events, serving, recommender, realtime.history_window_hours, now_utc, config.tower.history,
                      feed.page_cache, feed.prepare_window_seconds)

        def users_changed(keys: Sequence[int], histories: Mapping[int, Sequence[Event]]) -> None:
            elastic.mark_users(exts(ids.customers, keys))
            feeds.prepare(keys, asked_only=True, histories=histories)

        updater = UserVectorUpdater(
            events, users, user_mirror, index, serving, config.tower, weights, realtime.history_window_hours, now_utc,
            users_changed,
        )
        baskets, w = BasketStore(db), config.widgets
        recent = RecentViews(baskets, w.recently_viewed_size, w.recently_viewed_shoppers, w.window_days, now_utc)

        def processed(done: Sequence[Event]) -> None:
            recent.observe(done)
            # a feed that read a buyer's purchases while the purchase committed cached the set without it: the
            # committed purchase corrects it (a view or a click leaves the purchases, and their cache, as they are)
            events.forget_purchases(e.customer_id for e in done if e.event_name == "product_purchased")

        consumer = EventConsumer(
            queue, updater, lambda pid: pid in recommender.view().products, realtime.receive_wait_seconds,
            realtime.consumer_batch, realtime.user_index_sync_seconds, ids, realtime.consumer_backoff_max_seconds,
            lambda body, sent_at: queued_event(body, sent_at, config.events.max_future_seconds),
            on_processed=lambda lags: [metrics.consumer_lag.observe(lag) for lag in lags],
            on_outage=lambda cause: metrics.queue_outages.labels("consumer", cause).inc(), on_events=processed,
        )
        models = ModelRegistry(config.data_path / "models")
        shown = ImpressionStore(db)
        tables = Widgets(lambda: build_tables(baskets, w, now_utc(), recommender.view()), w.refresh_seconds)
        lists = NeighbourLists.attach(index, w.depth, w.neighbour_lists, lambda: most_popular(recommender))
        widget_parts = WidgetParts(recommender, tables, index, baskets, events, rules, w, now_utc, recent,
                                   Memo(w.cache_entries), lists)
        schedules = config.jobs
        work = {
            "retrain": lambda: upkeep.retrain(config, events, store, models, serving, updater, now_utc),
            "prune": lambda: upkeep.prune(config, db, events, users, user_mirror, now_utc, shown),
            "popularity": lambda: upkeep.popularity(recommender),
            "reindex": lambda: upkeep.reindex(indexer, user_mirror),
            "sync": lambda: upkeep.sync(elastic, recommender, index, users, ids),
            "widgets": lambda: refresh_widgets(tables),
        }
        jobs = Jobs(
            {name: JobSpec(name, run, getattr(schedules, name)) for name, run in work.items()},
            JobRunStore(db), schedules.misfire_grace_seconds,
            on_run=lambda run: metrics.job_seconds.labels(run.name, run.outcome).observe(run.seconds),
        )
        impressions = ImpressionLog(
            shown, config.analytics, now_utc, lambda exts: ids.customers.keys(exts, create=True),
            metrics.impressions_written.inc, metrics.impressions_dropped.inc,
        )
    except BaseException:
        db.close()
        raise
    services = Services(
        config, db, ids, catalog, events, encoder, index, indexer, recommender, users, user_mirror, queue, serving,
        models, updater, consumer, elastic, jobs,
        CustomerEraser(db, ids.customers, events, queue, users, user_mirror, elastic, impressions, recent),
        impressions, metrics, feeds, ProductOuts(config.catalog.tier_thresholds, ids.products), widget_parts,
        GroupCommit(db, events, queue), EditCommit(catalog),
    )
    watch_state(services)
    return services


def pace_collector(full_pass_threshold: int) -> None:
    """What start-up loaded (catalog view, vectors, caches) lives as long as the process: frozen out of the
    cyclic collector, whose full passes otherwise pause every thread for ~0.5 s at 100k products. What serving
    keeps for a while (feed snapshots, caches) still reaches the oldest generation, and a full pass over it
    held the GIL 70-150 ms every few seconds (BENCHMARKS.md): full passes now wait for `full_pass_threshold`
    middle-generation passes (minutes under load). Cycles are rare here (no full pass while serving found
    any); the young generations are still collected as often as before. Services.close restores Python's."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, full_pass_threshold)


def release_collector() -> None:
    """Undo `pace_collector`: what it froze is collectable again (frozen objects are never finalised at exit,
    and DuckDB's bindings then report every one of theirs as leaked on stderr), full passes as Python paces them."""
    gc.unfreeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, PYTHON_FULL_PASS_THRESHOLD)
    gc.collect()
