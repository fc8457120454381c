"""An in-process, durable queue with the contract of Amazon SQS (FIFO flavour), kept in DuckDB.

A message body is the SQS body of one interaction, a JSON object with the shop's own ids, such as
``{"customer_id": "anon-7f3a", "product_id": "85123A", "event_name": "product_clicked"}`` (optionally
with an ISO "timestamp"); integer ids mean their decimal string (bodies queued before string ids).
The consumer sees what an SQS consumer sees: `receive` (long poll, visibility timeout, a new receipt
handle per delivery), `delete` with the latest handle, `change_visibility`, redelivery when
the timeout passes, and a dead-letter queue after `max_receive_count` deliveries. So a shop can swap in
real SQS without touching the consumer.

Durability: a message is committed before `send` returns; `enqueue_in` writes inside the caller's
transaction, so an event row and its message commit (or roll back) together. Visibility is persisted:
after a restart, messages a dead process had in flight come back when their timeout passes.

Ordering: messages are grouped by customer (like SQS FIFO message groups). A customer's message is
never handed out while an earlier one of the same customer is in flight; a receive hands out a customer's
waiting messages together, in order, as far as `max_messages` allows (as SQS FIFO returns as many messages
of one group as it can), so a consumer handles each customer's part of a batch in its order.

Example (a consumer loop)::

    queue = DurableQueue(db, visibility_timeout=30, max_receive_count=5)
    queue.send({"customer_id": "c1", "product_id": "p2", "event_name": "product_viewed"})  # -> "1"
    for m in queue.receive(max_messages=10, wait_seconds=20):
        handle(m.body)  # on an error that can never succeed: queue.fail(m.receipt_handle, reason)
        queue.delete(m.receipt_handle)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import msgspec

from appliance.errors import InvalidInput
from appliance.ids import shop_id
from appliance.types import Event, now_utc
from storage.db import Database
from storage.queue_store import QueueStore

MAX_BATCH = 10  # SQS: at most 10 entries per SendMessageBatch / ReceiveMessage / DeleteMessageBatch
DEDUP_WINDOW_SECONDS = 300.0  # SQS FIFO deduplication interval
TRIM_EVERY_SECONDS = 60.0  # the dead-letter age cap is applied at least this often (and after every dead-lettering)


class Received(msgspec.Struct, frozen=True, gc=False):
    """One delivery. Untracked by the cyclic collector, like the `Event` made of it (strings, numbers, a datetime
    and the body, a dict of strings that is tracked on its own: nothing here refers back to it)."""

    message_id: str
    receipt_handle: str  # only the handle of the latest delivery deletes the message
    body: Any  # a JSON object; from SQS, whatever a shop published (the consumer's check refuses the rest)
    receive_count: int  # deliveries so far, this one included
    sent_at: datetime  # naive UTC
    arrival_key: str | None = None  # SQS: a message the shop published itself (its event is not stored yet)


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int  # visible now
    in_flight: int  # received, neither deleted nor timed out yet
    dead_lettered: int
    oldest_age_seconds: float  # age of the oldest live message (visible or in flight); 0 when empty
    dead_letters_dropped: int  # ever dropped by the dead-letter caps (count and age), oldest first
    outbox_backlog: int = 0  # messages committed in DuckDB not yet sent to SQS (always 0 in process)
    attributes: dict[str, str] | None = None  # the SQS queue's own attributes (None in process)
    unreachable: str | None = None  # why SQS did not answer (its counts are then 0)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    body: dict
    reason: str
    receive_count: int
    sent_at: datetime
    dead_at: datetime


class BodyEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as a message body says it, checked as POST /events checks its body (web/queued.py): the shop's
    ids (the consumer maps them to keys). Untracked by the cyclic collector, as `Event`."""

    customer_id: str
    product_id: str
    event_name: str
    ts: datetime
    recommendation_id: str | None
    position: int | None
    event_id: str | None = None  # the sender's id of the event (stored once per id)


def event_body(event: Event, customer_id: str, product_id: str) -> dict:
    """The SQS body of an event (whose keys are the shop's `customer_id` and `product_id`)."""
    return {
        "customer_id": customer_id,
        "product_id": product_id,
        "event_name": event.event_name,
        "timestamp": event.ts.isoformat(),
    }


def _group(body: dict) -> str | None:
    """The message group: the shop's customer id, when the body has a valid one."""
    try:
        return shop_id(body.get("customer_id"), "customer_id")
    except InvalidInput:
        return None


def _received(row: tuple) -> Received:
    """A message as handed out, from its row (RECEIVED_COLUMNS)."""
    return Received(str(row[0]), row[1], json.loads(row[2]), row[3], row[4])


class DurableQueue:
    """SQS-shaped queue over one DuckDB file. Thread-safe; every write goes through `db.write()`.

    `clock` returns naive-UTC datetimes (they are persisted, so they must mean the same after a restart);
    tests pass a clock they advance by hand. The dead-letter queue keeps at most `dead_letter_max` messages
    for at most `dead_letter_retention` seconds (None: no cap); the oldest go first and are counted.
    """

    def __init__(
        self,
        db: Database,
        *,
        visibility_timeout: float,
        max_receive_count: int,
        dedup_window: float = DEDUP_WINDOW_SECONDS,
        clock: Callable[[], datetime] = now_utc,
        receive_limit: int = MAX_BATCH,
        dead_letter_max: int | None = None,
        dead_letter_retention: float | None = None,
    ) -> None:
        if visibility_timeout < 0 or max_receive_count < 1 or dedup_window < 0:
            raise ValueError("need visibility_timeout >= 0, max_receive_count >= 1 and dedup_window >= 0")
        self.store = QueueStore(db)
        self.db = db
        self.visibility_timeout = float(visibility_timeout)
        self.max_receive_count = int(max_receive_count)
        self.dedup_window = timedelta(seconds=dedup_window)
        self.clock = clock
        # SQS hands out at most 10 per receive; the in-process consumer may take more per batch (a queue
        # swapped for real SQS then simply receives 10 at a time).
        self.receive_limit = receive_limit
        self.dead_letter_max = dead_letter_max
        self.dead_letter_retention = dead_letter_retention
        self._trimmed_at: datetime | None = None  # clock time of the last trim
        self._changed = threading.Condition()
        self._version = 0  # bumped on every change that may make a message deliverable
        self._closed = False

    # -- sending ---------------------------------------------------------------------------------------

    def send(self, body: dict, dedup_id: str | None = None) -> str:
        """Enqueue one message, durable when this returns; its message id (the first one for a dedup id)."""
        return self.send_batch([body], None if dedup_id is None else [dedup_id])[0]

    def send_batch(self, bodies: Sequence[dict], dedup_ids: Sequence[str | None] | None = None) -> list[str]:
        """Enqueue up to 10 messages in one transaction; their message ids, in order."""
        if len(bodies) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} messages per batch, got {len(bodies)}")
        if not bodies:
            return []
        with self.db.write() as cur:
            return self.enqueue_in(cur, bodies, dedup_ids)

    def enqueue_in(
        self,
        cur: duckdb.DuckDBPyConnection,
        bodies: Sequence[dict],
        dedup_ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Enqueue any number of messages inside a transaction the caller holds (the cursor of `db.write()`).

        They commit or roll back with the caller's other writes (the events row and its message together).
        """
        if dedup_ids is None:
            dedup_ids = [None] * len(bodies)
        if len(dedup_ids) != len(bodies):
            raise ValueError(f"{len(bodies)} bodies but {len(dedup_ids)} dedup ids")
        if not bodies:
            return []
        texts = []
        for body in bodies:
            if not isinstance(body, dict):
                raise ValueError(f"a message body is a JSON object, got {type(body).__name__}")
            try:
                texts.append(json.dumps(body, separators=(",", ":")))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"message body is not JSON-serialisable: {exc}") from exc
        now = self.clock()
        ids = self.store.insert(
            cur, texts, [_group(b) for b in bodies], list(dedup_ids), now, now - self.dedup_window
        )
        # Receivers woken now block on the writer lock (held by our caller) until this transaction ends.
        self._notify()
        return [str(i) for i in ids]

    # -- receiving -------------------------------------------------------------------------------------

    def receive(
        self, max_messages: int = MAX_BATCH, wait_seconds: float = 0.0, visibility_timeout: float | None = None
    ) -> list[Received]:
        """Up to `max_messages` messages: the customers with nothing in flight, oldest first, each customer's
        waiting messages together and in order; waits up to `wait_seconds` for one to become available (woken at
        once by a send). Each is invisible to other receives for `visibility_timeout` seconds (the queue's default
        when None) unless deleted."""
        self._check_limit(max_messages)
        if wait_seconds < 0:
            raise ValueError("wait_seconds must be >= 0")
        timeout = self.visibility_timeout if visibility_timeout is None else float(visibility_timeout)
        if timeout < 0:
            raise ValueError("visibility_timeout must be >= 0")
        deadline = time.monotonic() + wait_seconds
        while True:
            with self._changed:
                seen = self._version
                if self._closed:
                    return []
            now = self.clock()
            rows, next_visible, dead = self.store.receive(
                now, max_messages, now + timedelta(seconds=timeout), self.max_receive_count
            )
            self._trim(force=dead > 0)
            if rows:
                return [_received(r) for r in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if next_visible is not None:  # an in-flight message times out before the wait ends
                remaining = min(remaining, max((next_visible - now).total_seconds(), 0.01))
            with self._changed:
                if self._version == seen and not self._closed:
                    self._changed.wait(remaining)

    def receive_in(self, cur: duckdb.DuckDBPyConnection, max_messages: int) -> Callable[[], list[Received]]:
        """`receive` without a wait, inside the caller's transaction (the consumer's next batch, taken with the
        save of the one before: one hold of the writer lock for both); returns what to call once it has committed:
        the messages. A rollback leaves them unreceived."""
        self._check_limit(max_messages)
        now = self.clock()
        rows, dead = self.store.receive_in(
            cur, now, max_messages, now + timedelta(seconds=self.visibility_timeout), self.max_receive_count)

        def committed() -> list[Received]:
            self._trim(force=dead > 0)
            return [_received(r) for r in rows]

        return committed

    def _check_limit(self, max_messages: int) -> None:
        if not 1 <= max_messages <= self.receive_limit:
            raise ValueError(f"max_messages must be within 1..{self.receive_limit}, got {max_messages}")

    def delete(self, receipt_handle: str) -> bool:
        """Delete a received message; False when the handle is not the latest one of a live message."""
        return self.delete_batch([receipt_handle])[0]

    def delete_batch(self, receipt_handles: Sequence[str]) -> list[bool]:
        """Delete received messages in one transaction; per handle, whether it deleted its message."""
        if not receipt_handles:
            return []
        with self.store.db.write() as cur:
            deleted = self.delete_batch_in(cur, receipt_handles)
        return deleted()

    def delete_batch_in(
        self, cur: duckdb.DuckDBPyConnection, receipt_handles: Sequence[str]
    ) -> Callable[[], list[bool]]:
        """Delete received messages inside the caller's transaction (e.g. with the user vectors they gave), so the
        messages go only if the rest of it commits; returns what to call once it has: per handle, whether it
        deleted its message (and receivers are woken)."""
        done = self.store.delete_in(cur, list(receipt_handles))

        def committed() -> list[bool]:
            if done:
                self._notify()  # the next message of those customers may now be handed out
            return [h in done for h in receipt_handles]

        return committed

    def change_visibility(self, receipt_handle: str, seconds: float) -> bool:
        """Make a received message visible again in `seconds` from now (0: at once); False on a stale handle."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        changed = self.store.change_visibility(receipt_handle, self.clock() + timedelta(seconds=seconds))
        if changed:
            self._notify()
        return changed

    def fail(self, receipt_handle: str, reason: str) -> bool:
        """Move a received message to the dead-letter queue now (it can never succeed); False if stale."""
        moved = self.store.dead_letter(receipt_handle, reason, self.clock())
        if moved:
            self._trim(force=True)
            self._notify()
        return moved

    def _trim(self, force: bool) -> None:
        """Apply the dead-letter caps: after a dead-lettering, and at least every TRIM_EVERY_SECONDS (age)."""
        if self.dead_letter_max is None and self.dead_letter_retention is None:
            return
        now = self.clock()
        if not force and self._trimmed_at and (now - self._trimmed_at).total_seconds() < TRIM_EVERY_SECONDS:
            return
        self._trimmed_at = now
        keep = 2**62 if self.dead_letter_max is None else self.dead_letter_max
        retention = self.dead_letter_retention
        self.store.trim_dead(keep, datetime.min if retention is None else now - timedelta(seconds=retention))

    # -- inspecting and the dead-letter queue ----------------------------------------------------------

    def stats(self) -> QueueStats:
        now = self.clock()
        depth, in_flight, dead, oldest, dropped = self.store.stats(now)
        age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        return QueueStats(depth, in_flight, dead, age, dropped)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return [
            DeadLetter(str(mid), json.loads(body), reason, count, sent_at, dead_at)
            for mid, body, reason, count, sent_at, dead_at in self.store.dead_letters(limit)
        ]

    def redrive(self, limit: int | None = None) -> int:
        """Move dead letters (oldest first, all when `limit` is None) back to the end of the queue with
        their receive count reset; how many were moved."""
        moved = self.store.redrive(limit, self.clock())
        if moved:
            self._notify()
        return moved

    def release_in_flight(self) -> int:
        """At start-up (DuckDB admits one process, so no other consumer exists): deliver again at once the
        messages a stopped or killed process still held, instead of after their visibility timeout."""
        released = self.store.release(self.clock())
        if released:
            self._notify()
        return released

    def purge_customer_in(self, cur: duckdb.DuckDBPyConnection, customer_id: str) -> int:
        """Delete a customer's messages (the shop's id), live and dead-lettered (a privacy request, a merged
        anonymous id), in the caller's transaction."""
        return self.store.purge_group_in(cur, customer_id)

    def start(self) -> None:
        """Nothing to start in process (the SQS backend starts its outbox sender here)."""

    def close(self) -> None:
        """Wake every long poll (they return empty) and refuse further receives; messages stay stored."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()
