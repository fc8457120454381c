"""Start-up (run off the event loop once the services are built): the demo shop, the indexes, the serving model,
the background embedding, the queue and its consumer, the feeds' warm-up, the scheduler; then ready."""

from __future__ import annotations

import gc
import logging
from dataclasses import replace
from datetime import timedelta

import msgspec

from appliance.demo import generate_demo
from appliance.errors import ModelUnreadable
from appliance.types import now_utc
from jobs.indexing import BackgroundIndexer
from jobs.realtime import MEAN
from storage.ids import IdMap
from storage.job_runs import JobRun
from web.services import Services, pace_collector

log = logging.getLogger("appliance")
DEMO_RUN = "demo"  # the job_runs entry that records loading the demo shop


def load_demo(services: Services) -> bool:
    """Fill an empty store with the generated demo shop (events end now). False if the store had products."""
    if services.catalog.store.count():
        return False
    demo = services.config.demo
    now = now_utc()
    shop = generate_demo(demo.seed, demo.products, demo.customers, demo.days, now)
    # the demo's numbers are the shop's ids ("17"); inside, the keys the map hands out
    ids = services.ids
    product = _keys(ids.products, [p.product_id for p in shop.products])
    customer = _keys(ids.customers, sorted({e.customer_id for e in shop.events}))
    products = [replace(p, product_id=product[p.product_id]) for p in shop.products]
    events = [msgspec.structs.replace(e, customer_id=customer[e.customer_id], product_id=product[e.product_id])
              for e in shop.events]
    services.catalog.upsert(products, now - timedelta(seconds=1), embed_now=False)
    services.events.append(events, now)
    detail = f"loaded the demo shop: {len(shop.products)} products, {len(shop.events)} events"
    services.jobs.runs.record(JobRun(DEMO_RUN, now, now_utc(), 0.0, "ok", detail))  # so a restart knows
    log.info("%s", detail)
    return True


def _keys(ids: IdMap, numbers: list[int]) -> dict[int, int]:
    return dict(zip(numbers, ids.keys([str(n) for n in numbers], create=True), strict=True))  # type: ignore[arg-type]


def demo_untrained(services: Services) -> bool:
    """The demo was loaded by an earlier start whose first training never ended (the process was killed)."""
    config, runs = services.config, services.jobs.runs
    return (config.server.load_demo and config.demo.train and services.serving.get().model is None
            and runs.last(DEMO_RUN) is not None and runs.last("retrain") is None)


def start(services: Services) -> None:
    """Start-up work that may take long (run off the event loop): demo, index, model, background embedding."""
    try:
        demo = services.config.server.load_demo and load_demo(services)
        load_indexes(services)
        waiting = services.updater.resume()
        if waiting:
            log.info("%d shoppers without a vector get one as their products' vectors arrive", waiting)
        load_serving_model(services)
        services.encoder.load()
        services.background = BackgroundIndexer(services.indexer, _log_error)
        services.background.start()
        services.background.kick()
        released = services.queue.release_in_flight()
        if released:
            log.info("%d messages left in flight by the previous process are delivered again", released)
        services.queue.start()
        services.consumer.start()
        services.impressions.start()
        services.threads.start(_warm_feeds, "feed-warm", services)
        if demo or demo_untrained(services):
            services.threads.start(_personalise_demo, "demo-vectors", services)
        if services.config.jobs.enabled:
            services.jobs.start()
        services.ready.set()
    except Exception as exc:
        services.startup_error = f"{type(exc).__name__}: {exc}"
        log.exception("start-up failed")
        raise


def _warm_feeds(services: Services) -> None:
    try:
        viewers = services.widgets.recent.warm()
        services.widgets.widgets.tables()  # built now rather than by the first widget request
        log.info("recently viewed products in memory for %d shoppers", viewers)
    except Exception:  # only a head start: widgets read DuckDB for what is not in memory
        log.exception("warming the widgets failed")
    try:
        if services.threads.stopping.is_set():
            return
        services.recommender.refresh_popularity()  # else the first feed request computes it (0.3 s at 100k)
        warmed = services.feeds.warm(services.threads.stopping)
    except Exception:  # only a head start: feeds compute what they miss
        log.exception("warming the feeds failed")
        return
    with services.freezing:  # a warm-up that outlives close() (a short test, a quick stop) freezes nothing
        if services.closing:
            return
        pace_collector(services.config.server.gc_full_pass_threshold)
    log.info("feeds warmed for %d recently active shoppers; %d start-up objects frozen", warmed, gc.get_freeze_count())
    services.widgets.lists.start()  # after the feeds: their warm-up is what a restart's first visitors wait for


def load_indexes(services: Services) -> None:
    """Load the product and user indexes (or rebuild them from DuckDB when missing or out of step)."""
    state = services.indexer.reconcile()
    log.info("product index %s: %d vectors", state, len(services.index))
    state = services.user_mirror.reconcile()
    log.info("user index %s: %d vectors", state, len(services.user_mirror.index))


def _personalise_demo(services: Services) -> None:
    """Once the demo catalog is embedded, give its recently active shoppers their vectors (as if they had
    just clicked), so the demo's feeds are personal from the start; then train the demo's first tower."""
    background, stopping = services.background, services.threads.stopping
    if background is None:
        return
    for _ in range(1800):  # up to 30 minutes for the demo catalog's vectors, a second at a time
        if stopping.is_set():
            return
        if background.wait_idle(timeout=1.0):
            break
    else:
        return
    log.info("demo shoppers with a personal feed: %d", services.updater.refresh())
    if services.config.demo.train and services.serving.get().model is None and not stopping.is_set():
        run = services.jobs.run("retrain")  # recorded in /jobs; a promotion recomputes the shoppers' vectors
        log.info("demo tower: %s", run.detail if run else "a retrain was already running")


def load_serving_model(services: Services) -> None:
    """The promoted tower from the model registry, or the mean-vector fallback when there is none."""
    try:
        found = services.models.serving()
    except ModelUnreadable as exc:  # serve the fallback, say why in /model; the next promotion replaces it
        reason = f"{exc}; serving the mean of recent product vectors until a model is promoted"
        services.serving.set(None, MEAN, None, reason)
        log.warning("%s", reason)
        return
    if found is None:
        return
    model, meta = found
    services.serving.set(model, meta.version, meta.as_dict())
    log.info("serving user tower %s", meta.version)


def _log_error(exc: BaseException) -> None:
    log.error("background indexing failed: %s", exc, exc_info=exc)
