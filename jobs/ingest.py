"""POST /events' write path with group commit: concurrent requests share one DuckDB transaction.

Each request's events and their queue messages are still durable before its answer: `append` returns only
once the transaction holding its rows has committed. While one transaction commits, the requests arriving
meanwhile queue up; the next committer takes all of them, so under load one commit (and one INSERT per table)
carries many requests instead of one each. A group that fails for another reason than the store itself is
retried request by request, so one request's failure stays its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from appliance.errors import StoreUnavailable
from appliance.types import Event
from jobs.queue import DurableQueue
from jobs.sqs import SqsQueue
from storage.db import Database
from storage.events import EventStore, Written


@dataclass(eq=False)
class _Request:
    events: Sequence[Event]
    bodies: Sequence[dict]
    received_at: datetime
    written: Written | None = None
    error: Exception | None = None
    done: bool = False


class GroupCommit:
    def __init__(self, db: Database, events: EventStore, queue: DurableQueue | SqsQueue,
                 max_events: int = 10_000) -> None:
        self.db = db
        self.events = events
        self.queue = queue
        self.max_events = max_events  # events per transaction at most (a request is never split)
        self._pending: list[_Request] = []
        self._lock = threading.Lock()  # guards _pending
        self._committer = threading.Lock()  # one group in the store at a time
        self.commits = 0  # transactions committed, for the figures of `appliance bench serve`
        self.requests = 0

    def append(self, events: Sequence[Event], bodies: Sequence[dict], received_at: datetime) -> Written:
        """Store these events with their queue messages (one body per event); their event ids once committed
        (an event whose key is stored already is neither stored nor queued again: it answers with the stored id).
        The group's received_at is the newest of its requests' (they arrived within one commit's time)."""
        request = _Request(events, bodies, received_at)
        with self._lock:
            self._pending.append(request)
        while not request.done:
            with self._committer:
                if not request.done:
                    self._commit(self._take())
        if request.error is not None:
            raise request.error
        assert request.written is not None
        return request.written

    def _take(self) -> list[_Request]:
        with self._lock:
            group, size = [], 0
            while self._pending and (not group or size + len(self._pending[0].events) <= self.max_events):
                size += len(self._pending[0].events)
                group.append(self._pending.pop(0))
            return group

    def _commit(self, group: list[_Request]) -> None:
        try:
            self._write(group)
        except StoreUnavailable as exc:  # the store refuses every write: each request is told so
            for request in group:
                request.error = exc
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
            else:
                for request in group:  # one request's bad rows must not fail the others
                    try:
                        self._write([request])
                    except Exception as alone:
                        request.error = alone
        finally:
            for request in group:
                request.done = True

    def _write(self, group: list[_Request]) -> None:
        with self.db.write() as cur:  # the events and their queue messages commit together
            written = self.events.append_in(cur, [e for r in group for e in r.events],
                                            max(r.received_at for r in group))
            bodies = [b for r in group for b in r.bodies]  # an event stored already (its key) is not queued again
            self.queue.enqueue_in(cur, [b for b, fresh in zip(bodies, written.fresh, strict=True) if fresh])
        start = 0
        for request in group:
            end = start + len(request.events)
            request.written, start = Written(written.event_ids[start:end], written.fresh[start:end]), end
        self.commits += 1
        self.requests += len(group)
