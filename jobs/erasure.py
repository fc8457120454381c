"""Erasing a shopper (a privacy request): one use case over every store that holds them.

What it guarantees: once `erase` returns, the shopper's events, purchases, queued messages and vector are gone
from DuckDB in one commit, and nothing computed from them comes back. Work already in flight cannot undo it:
a user vector is saved only if the newest event it was computed from still exists (checked inside the
single-writer transaction, `UserStore.save`), the user index drops the id under the lock its sync holds,
and the Elasticsearch outbox is told, so the next sync deletes the shopper's document there.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.indexing import IndexMirror
from jobs.queue import DurableQueue
from storage.db import Database
from storage.elastic_outbox import ElasticSync, NoopElasticSync
from storage.events import EventStore
from storage.users import UserStore


@dataclass(frozen=True, slots=True)
class Erased:
    customer_id: int
    events: int  # events deleted
    queued_messages: int  # queue messages deleted (live and dead-lettered)
    vectors: int  # user vectors deleted (0 or 1)


@dataclass(frozen=True)
class CustomerEraser:
    db: Database
    events: EventStore
    queue: DurableQueue
    users: UserStore
    user_mirror: IndexMirror
    elastic: ElasticSync | NoopElasticSync

    def erase(self, customer_id: int) -> Erased:
        """Delete everything the appliance holds about one shopper; says how much of each."""
        try:
            with self.db.write() as cur:  # one commit: a crash leaves either all of it or none erased
                events = self.events.erase_in(cur, customer_id)
                messages = self.queue.purge_customer_in(cur, customer_id)
                vectors = self.users.delete_in(cur, [customer_id])
        finally:
            self.users.forget([customer_id])  # whatever the outcome, the cache must not answer for DuckDB
        self.user_mirror.remove([customer_id])
        self.elastic.mark_users([customer_id])
        return Erased(customer_id, events, messages, vectors)
