"""Merging two ids of one shopper: an anonymous visitor who logs in keeps what they did (Recombee's
MergeUsers, Algolia's authenticatedUserToken).

    merged = merge_customers(parts, "c-1001", "anon-7f3a")
    merged.events  # how many events now belong to c-1001; a repeat moves 0
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import InvalidInput
from jobs.attribution import ImpressionLog
from jobs.queue import DurableQueue
from jobs.realtime import UserVectorUpdater
from jobs.recent import RecentViews
from storage.db import Database
from storage.events import EventStore
from storage.ids import ShopIds


@dataclass(frozen=True)
class IdentityParts:
    """What a merge touches (the vector updater also reaches the user index and the Elasticsearch outbox)."""

    db: Database
    ids: ShopIds
    events: EventStore
    queue: DurableQueue
    updater: UserVectorUpdater
    impressions: ImpressionLog  # what the anonymous id was shown follows it (an erasure then finds it)
    recent: RecentViews  # what the anonymous id viewed follows it too


@dataclass(frozen=True)
class Merged:
    customer_id: str
    anonymous_id: str
    events: int  # events moved to the customer
    purchases: int  # purchased products new to the customer
    queued_messages: int  # the anonymous id's queued messages, purged (their events were moved)
    vectors: int  # the anonymous vector, dropped (0 or 1)
    vector: str  # the customer's recomputed vector: its model version, or "none" without usable history


def merge_customers(parts: IdentityParts, customer_id: str, anonymous_id: str) -> Merged:
    """Move the anonymous id's events and purchases to the customer (created if new), drop the anonymous
    vector (DuckDB, user index, Elasticsearch), purge its queued messages, forget the anonymous id and
    recompute the customer's vector. Idempotent: once the anonymous id is gone, a repeat moves nothing."""
    if customer_id == anonymous_id:
        raise InvalidInput(f"anonymous_id {anonymous_id!r} is the customer itself", field="anonymous_id")
    customers = parts.ids.customers
    source = customers.key(anonymous_id)
    if source is None:  # never seen, or merged already
        return Merged(customer_id, anonymous_id, 0, 0, 0, 0, "unchanged")
    target = customers.keys([customer_id], create=True)[0]
    assert target is not None
    had_vector = parts.updater.users.get(source) is not None
    parts.impressions.flush()  # buffered ones hold the shop's id: written (under the anonymous key) first
    with parts.db.write() as cur:  # the history moves and the anonymous messages go in one commit
        events, purchases = parts.events.move_in(cur, source, target)
        messages = parts.queue.purge_customer_in(cur, anonymous_id)
        parts.impressions.store.move_in(cur, source, target)
    # With no history left, the anonymous vector is deleted (DuckDB, user index) and marked for deletion in
    # Elasticsearch: while its id is still mapped, so the outbox can name the document.
    versions = parts.updater.update([source, target])
    parts.recent.forget(source)
    parts.recent.reload(target)
    customers.forget([source])
    return Merged(customer_id, anonymous_id, events, purchases, messages, int(had_vector), versions[target])
