"""Real time: the serving tower, fresh user vectors from recent history, and the queue consumer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from appliance.config_sections import TowerConfig
from appliance.errors import InvalidInput, QueueUnavailable, StoreUnavailable
from appliance.tower import UserTower, mean_vector, pad_histories, user_vectors
from appliance.types import EVENT_INDEX, Event, now_utc
from jobs.indexing import IndexMirror
from jobs.outage import Outage
from jobs.queue import BodyEvent, DurableQueue, Received
from storage.events import EventStore
from storage.ids import ShopIds
from storage.users import UserStore
from storage.vectors import VectorIndex

log = logging.getLogger("appliance.realtime")
MEAN = "mean"  # the model_version of vectors made by the no-model fallback


@dataclass(frozen=True)
class Serving:
    model: UserTower | None  # None: the fallback (mean of recent product vectors)
    version: str
    meta: Mapping | None = None
    fallback_reason: str | None = None


class ServingModel:
    """The tower that serves now; replaced atomically (one reference swap)."""

    def __init__(self) -> None:
        self._current = Serving(None, MEAN, None, "no model has been trained yet")

    def get(self) -> Serving:
        return self._current

    def set(
        self, model: UserTower | None, version: str, meta: Mapping | None = None, reason: str | None = None
    ) -> None:
        if model is not None:
            model.eval()
        self._current = Serving(model, version, meta, reason)


class UserVectorUpdater:
    """Recomputes shoppers' vectors from their last `tower.history` interactions (inside the serving window, when
    one is set: `realtime.history_window_hours` > 0)."""

    def __init__(
        self, events: EventStore, users: UserStore, user_mirror: IndexMirror, products: VectorIndex,
        serving: ServingModel, tower: TowerConfig, weights: Mapping[str, float], window_hours: float,
        clock: Callable[[], datetime],
        on_change: Callable[[Sequence[int], Mapping[int, Sequence[Event]]], None] = lambda ids, histories: None,
    ) -> None:
        self.events = events
        self.users = users
        self.user_mirror = user_mirror
        self.products = products
        self.serving = serving
        self.tower = tower
        self.weights = weights
        self.window = timedelta(hours=window_hours) if window_hours > 0 else None
        self.clock = clock
        self.on_change = on_change  # told the customers whose vector was saved or dropped, with the histories read
        self.waiting: set[int] = set()  # shoppers whose products had no vector yet: retried as the index grows
        self._waiting_lock = threading.Lock()
        self._retried_at = -1  # product index size at the last retry

    def window_start(self, now: datetime) -> datetime | None:
        """The oldest moment of the serving history, or None: no window."""
        return now - self.window if self.window is not None else None

    def update(
        self, customer_ids: Sequence[int], also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> dict[int, str]:
        """New vectors for these customers; returns customer -> model version, "none" when they have no
        history (inside the window; their vector is dropped) and "kept" when none of their products has a
        vector yet (their stored vector, if any, stays: a vector is never deleted for want of product vectors).
        The vectors saved and dropped are one transaction, and `also` runs inside it (when given, it always runs)."""
        now = self.clock()
        newest, histories = self.events.recent(customer_ids, self.window_start(now), self.tower.history)
        basis = dict(zip(customer_ids, newest, strict=True))  # read with the histories: one snapshot
        wanted = sorted({e.product_id for h in histories.values() for e in h})
        vectors = self.products.lookup(np.asarray(wanted, dtype=np.int64))
        batch, kept, last_at, waiting = [], [], [], set()
        for cid in customer_ids:
            usable = [e for e in histories[cid] if e.product_id in vectors]
            if not usable:
                if histories[cid]:
                    waiting.add(cid)
                continue
            batch.append((
                np.stack([vectors[e.product_id] for e in usable]),
                np.array([EVENT_INDEX[e.event_name] for e in usable], dtype=np.int64),
                np.array([(now - e.ts).total_seconds() / 3600.0 for e in usable], dtype=np.float32),
            ))
            kept.append(cid)
            last_at.append(max(e.ts for e in usable))
        gone = [c for c in customer_ids if not histories[c]]
        vecs, version = self._vectors(batch) if kept else (None, "none")
        saved = set(self.users.save(kept, vecs, version, last_at, now, [basis[c] for c in kept], gone, also))
        if gone:
            self.user_mirror.remove(gone)
        kept_set = set(kept) & saved  # the others were erased while their vector was computed
        with self._waiting_lock:
            self.waiting.difference_update(customer_ids)
            self.waiting.update(waiting)
        changed = [c for c in customer_ids if c not in waiting]
        if changed:
            self.on_change(changed, histories)
        return {c: version if c in kept_set else ("kept" if c in waiting else "none") for c in customer_ids}

    def refresh(
        self, customer_ids: Sequence[int] | None = None, chunk: int = 256,
        progress: Callable[[int], None] = lambda n: None,
    ) -> int:
        """Recompute the vectors of these customers (default: every shopper with history inside the window),
        in chunks, telling `progress` how many each chunk held; how many vectors were saved."""
        if customer_ids is None:
            customer_ids = self.events.customers(self.window_start(self.clock()))
        saved = 0
        for i in range(0, len(customer_ids), chunk):
            part = customer_ids[i:i + chunk]
            saved += sum(v not in ("none", "kept") for v in self.update(part).values())
            progress(len(part))
        return saved

    def resume(self) -> int:
        """At start-up: shoppers with history (inside the window) but no vector, e.g. whose events were processed
        before their products were embedded and then the process stopped, wait for product vectors again."""
        missing = self.events.customers(self.window_start(self.clock()), without_vector=True)
        with self._waiting_lock:
            self.waiting.update(missing)
            self._retried_at = -1
        return len(missing)

    def retry_waiting(self) -> int:
        """Once the product index has grown (products embedded after their events arrived), recompute the
        shoppers that were waiting for product vectors; how many got one."""
        size = len(self.products)
        if not self.waiting or size == self._retried_at:
            return 0
        self._retried_at = size
        with self._waiting_lock:
            customers = sorted(self.waiting)
        return self.refresh(customers)

    def _vectors(self, batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, str]:
        arrays = pad_histories(batch, self.tower.history, self.products.dim)
        serving = self.serving.get()
        if serving.model is not None:
            try:
                return user_vectors(serving.model, *arrays), serving.version
            except Exception as exc:  # a broken model must not stop the feed: fall back and say so in /model
                log.exception("the user tower failed; using the mean of recent product vectors")
                self.serving.set(None, MEAN, serving.meta, f"tower {serving.version} failed: {exc}")
        return mean_vector(*arrays, self.weights, self.tower.recency_half_life_hours), MEAN


class EventConsumer:
    """Receives event messages, refreshes the shoppers' vectors, deletes what it processed.

    Bodies carry the shop's ids, mapped to keys here. A message whose product is not in the catalog goes to
    the dead-letter queue with that reason (the event itself stays in DuckDB); one whose customer is no longer
    mapped (erased or merged since) is done: there is no one to update. A batch that fails is not deleted:
    it is delivered again after the visibility timeout, and dead-lettered after max_receive_count tries.
    """

    def __init__(
        self, queue: DurableQueue, updater: UserVectorUpdater, product_exists: Callable[[int], bool],
        wait_seconds: float, batch: int, index_sync_seconds: float, ids: ShopIds, backoff_max_seconds: float,
        read_body: Callable[[Any, datetime], BodyEvent],
        on_processed: Callable[[Sequence[float]], None] = lambda lags: None,
        on_events: Callable[[Sequence[Event]], None] = lambda events: None,
        on_outage: Callable[[str], None] = lambda cause: None,
    ) -> None:
        self.queue = queue
        self.read_body = read_body  # the event of a body (sent at): POST /events' checks; InvalidInput otherwise
        # SQS unreachable or the disk refusing writes: one warning, waits of 1 s doubling to the cap, one info
        self.outage = Outage("event consumer", log, 1.0, backoff_max_seconds, on_outage)
        self.ids = ids
        self.on_processed = on_processed  # told each processed message's lag (seconds since it was sent)
        self.on_events = on_events  # told the events processed (in keys), e.g. the recently viewed rings
        self.updater = updater
        self.product_exists = product_exists
        self.wait_seconds = wait_seconds
        self.batch = batch
        self.index_sync_seconds = index_sync_seconds  # the user index trails DuckDB by at most this
        self._synced = 0.0
        self.processed = 0
        self._ahead: list[Received] = []  # the next batch, received with the save of the last one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-consumer", daemon=True)

    def run_once(self, wait_seconds: float = 0.0) -> int:
        messages = self._ahead or self.queue.receive(max_messages=self.batch, wait_seconds=wait_seconds)
        self._ahead = []
        good, customers, arrivals, seen = [], set(), [], []
        for message in messages:
            try:
                event = self.read_body(message.body, message.sent_at)
            except InvalidInput as exc:
                self.queue.fail(message.receipt_handle, f"malformed message: {exc}")
                continue
            product = self.ids.products.key(event.product_id)
            if product is None or not self.product_exists(product):
                self.queue.fail(message.receipt_handle, f"unknown product {event.product_id}")
                continue
            good.append(message)
            seen.append((event, product))
            if message.arrival_key is not None:
                arrivals.append((message.arrival_key, event, product))
                continue
            customer = self.ids.customers.key(event.customer_id)
            if customer is not None:
                customers.add(customer)
        customers.update(self._store_arrivals(arrivals))
        if good:
            self._update_and_delete(sorted(customers), [m.receipt_handle for m in good])
            keys = self.ids.customers.keys([e.customer_id for e, _ in seen])
            self.on_events([Event(c, p, e.event_name, e.ts) for (e, p), c in zip(seen, keys, strict=True)
                            if c is not None])
            self.processed += len(good)
            done = now_utc()
            self.on_processed([(done - m.sent_at).total_seconds() for m in good])
        self.updater.retry_waiting()
        if time.monotonic() - self._synced >= self.index_sync_seconds:
            self.updater.user_mirror.sync()  # the feed reads vectors from DuckDB; the index follows in bulk
            self._synced = time.monotonic()
        return len(messages)

    def _update_and_delete(self, customers: list[int], handles: list[str]) -> None:
        """The customers' vectors, the delete of the messages that asked for them and the receive of the next batch
        in one DuckDB transaction (one hold of the writer lock: under the write streams the consumer spent most of
        its time waiting for that lock, twice per batch; BENCHMARKS.md "Feed under load", seventeenth round). A
        fault or a crash before its commit leaves all of it undone, and the messages are delivered again (after
        their visibility timeout, or at once on a restart: `release_in_flight`)."""
        if not customers:
            self.queue.delete_batch(handles)
            return
        deleted: list[Callable[[], list[bool]]] = []
        ahead: list[Callable[[], list[Received]]] = []

        def also(cur: duckdb.DuckDBPyConnection) -> None:
            deleted.append(self.queue.delete_batch_in(cur, handles))
            ahead.append(self.queue.receive_in(cur, self.batch))  # `stop` makes them visible again if left

        self.updater.update(customers, also=also)
        for committed in deleted:
            committed()
        self._ahead = [m for received in ahead for m in received()]

    def _store_arrivals(self, arrivals: Sequence[tuple[str, BodyEvent, int]]) -> list[int]:
        """Store the events of messages the shop published to SQS itself, once per key: the body's event_id,
        else the message's arrival key (a redelivery stores nothing); the customers they belong to."""
        if not arrivals:
            return []
        keys = self.ids.customers.keys([e.customer_id for _, e, _ in arrivals], create=True)
        self.updater.events.append([
            Event(customer, product, e.event_name, e.ts, e.recommendation_id, e.position, e.event_id or key)
            for (key, e, product), customer in zip(arrivals, keys, strict=True)], now_utc())
        return [c for c in keys if c is not None]

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand; unprocessed messages stay in DuckDB for the next start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for message in self._ahead:  # received with the last batch's save, not processed: visible again at once
            self.queue.change_visibility(message.receipt_handle, 0)
        self._ahead = []
        self.updater.user_mirror.sync()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(self.wait_seconds)
                self.outage.recovered()
            except (QueueUnavailable, StoreUnavailable) as exc:  # the messages wait (SQS, DuckDB) until it is back
                self._stop.wait(self.outage.failed("sqs" if isinstance(exc, QueueUnavailable) else "store", str(exc)))
            except Exception:  # the consumer outlives one bad batch; the batch is retried later
                log.exception("event batch failed")
                self._stop.wait(1.0)
