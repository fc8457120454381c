"""POST /events' write path with group commit: concurrent requests share one DuckDB transaction, written by one
writer thread.

Each request's events and their queue messages are still durable before its answer: its future resolves only
once the transaction holding its rows has committed. While one transaction commits, the requests arriving
meanwhile queue up; the writer then takes all of them, so under load one commit (and one INSERT per table)
carries many requests instead of one each. No request holds a thread while it waits: the HTTP handler awaits
its future on the event loop (a pool of blocked threads would cap a group at the pool's size, 6 threads on
2 cores, and starve every other `sync_to_thread` route). A group that fails for another reason than the store
itself is retried request by request, so one request's failure stays its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from appliance.errors import StoreUnavailable
from appliance.types import Event
from jobs.queue import DurableQueue
from jobs.sqs import SqsQueue
from jobs.writer_thread import WriterThread
from storage.db import Database
from storage.events import EventStore, Written


@dataclass(eq=False)
class _Request:
    events: Sequence[Event]
    bodies: Sequence[dict]
    received_at: datetime
    future: Future[Written] = field(default_factory=Future)


class GroupCommit(WriterThread[_Request]):
    def __init__(self, db: Database, events: EventStore, queue: DurableQueue | SqsQueue,
                 max_events: int = 10_000) -> None:
        super().__init__("event-writer", "the server is stopping: events are not taken any more")
        self.db = db
        self.events = events
        self.queue = queue
        self.max_events = max_events  # events per transaction at most (a request is never split)
        self._committer = threading.Lock()  # held by the writer while a group is in the store
        self.commits = 0  # transactions committed, for the figures of `appliance bench serve`
        self.requests = 0

    def submit(self, events: Sequence[Event], bodies: Sequence[dict], received_at: datetime) -> Future[Written]:
        """Queue these events with their queue messages (one body per event) for the next group; the future
        holds their event ids once committed (an event whose key is stored already is neither stored nor queued
        again: it answers with the stored id). The group's received_at is the newest of its requests' (they
        arrived within one commit's time)."""
        request = _Request(events, bodies, received_at)
        request.future.set_running_or_notify_cancel()  # a client that goes away cannot take its rows back out
        self._queue(request)
        return request.future

    def append(self, events: Sequence[Event], bodies: Sequence[dict], received_at: datetime) -> Written:
        """`submit`, then wait for the commit: the event ids and which of them were new."""
        return self.submit(events, bodies, received_at).result()

    def _turn(self) -> None:
        with self._committer:
            self._commit(self._take())

    def _take(self) -> list[_Request]:
        with self._wake:
            group, size = [], 0
            while self._pending and (not group or size + len(self._pending[0].events) <= self.max_events):
                size += len(self._pending[0].events)
                group.append(self._pending.pop(0))
            return group

    def _commit(self, group: list[_Request]) -> None:
        try:
            ids = self._write(group)
        except StoreUnavailable as exc:  # the store refuses every write: each request is told so
            for request in group:
                request.future.set_exception(exc)
        except Exception as exc:
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            for request in group:  # one request's bad rows must not fail the others
                try:
                    request.future.set_result(self._write([request])[0])
                except Exception as alone:
                    request.future.set_exception(alone)
        else:
            for request, own in zip(group, ids, strict=True):
                request.future.set_result(own)

    def _write(self, group: list[_Request]) -> list[Written]:
        """One transaction for the group's events and their queue messages; each request's share of it."""
        with self.db.write() as cur:
            written = self.events.append_in(cur, [e for r in group for e in r.events],
                                            max(r.received_at for r in group))
            bodies = [b for r in group for b in r.bodies]  # an event stored already (its key) is not queued again
            self.queue.enqueue_in(cur, [b for b, fresh in zip(bodies, written.fresh, strict=True) if fresh])
        out, start = [], 0
        for request in group:
            end = start + len(request.events)
            out.append(Written(written.event_ids[start:end], written.fresh[start:end]))
            start = end
        self.commits += 1
        self.requests += len(group)
        return out
