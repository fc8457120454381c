"""Erasing a shopper (a privacy request): one use case over every store that holds them.

What it guarantees: once `erase` returns, the shopper's events, purchases, queued messages, impressions and vector
are gone from DuckDB in one commit, and nothing computed from them comes back. Work already in flight cannot undo it:
a user vector is saved only if the newest event it was computed from still exists (checked inside the
single-writer transaction, `UserStore.save`), the user index drops the id under the lock its sync holds,
and the Elasticsearch outbox is told, so the next sync deletes the shopper's document there.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.attribution import ImpressionLog
from jobs.indexing import IndexMirror
from jobs.queue import DurableQueue
from jobs.recent import RecentViews
from storage.db import Database
from storage.elastic_outbox import ElasticSync, NoopElasticSync
from storage.events import EventStore
from storage.ids import IdMap
from storage.users import UserStore


@dataclass(frozen=True, slots=True)
class Erased:
    customer_id: str  # the shop's id
    events: int  # events deleted
    queued_messages: int  # queue messages deleted (live and dead-lettered)
    vectors: int  # user vectors deleted (0 or 1)
    impressions: int  # recommended items recorded as shown to them


@dataclass(frozen=True)
class CustomerEraser:
    db: Database
    customers: IdMap  # the shop's customer ids and their keys
    events: EventStore
    queue: DurableQueue
    users: UserStore
    user_mirror: IndexMirror
    elastic: ElasticSync | NoopElasticSync
    impressions: ImpressionLog
    recent: RecentViews  # the recently viewed rings in memory

    def erase(self, customer_id: str) -> Erased:
        """Delete everything the appliance holds about one shopper, the id's mapping last; says how much of each.
        An id never seen (or erased already) erases nothing."""
        self.impressions.flush()  # so none of theirs is written after the erasure
        key = self.customers.key(customer_id)
        if key is None:
            return Erased(customer_id, 0, 0, 0, 0)
        try:
            with self.db.write() as cur:  # one commit: a crash leaves either all of it or none erased
                events = self.events.erase_in(cur, key)
                messages = self.queue.purge_customer_in(cur, customer_id)
                vectors = self.users.delete_in(cur, [key])
                impressions = self.impressions.store.erase_in(cur, key)
        finally:
            self.users.forget([key])  # whatever the outcome, the caches must not answer for DuckDB
            self.recent.forget(key)
        self.user_mirror.remove([key])
        self.elastic.mark_users([customer_id])
        self.customers.forget([key])
        return Erased(customer_id, events, messages, vectors, impressions)
