"""An import of a shop's event history, made live at once: stored, its shoppers' vectors, fresh popularity."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.recommender import Recommender
from appliance.types import Event
from jobs.realtime import UserVectorUpdater
from storage.events import EventStore


@dataclass(frozen=True)
class ImportedEvents:
    stored: int
    duplicates: int  # rows left out: already stored, or repeated in the file
    customers: int  # distinct shoppers in the file
    vectors: int  # of them, how many have a vector now
    popular: int  # products with popularity after the import


def past_retention(timestamps: Sequence[datetime], now: datetime, retention_days: float) -> int:
    """How many events at these times the next prune would delete (0 when events are kept forever)."""
    if retention_days <= 0:
        return 0
    before = now - timedelta(days=retention_days)
    return sum(ts < before for ts in timestamps)


def import_events(
    events: Sequence[Event], dated: Sequence[bool], now: datetime, store: EventStore, updater: UserVectorUpdater,
    recommender: Recommender, progress: Callable[[int], None] = lambda n: None,
) -> ImportedEvents:
    """Store the events not stored yet in one transaction (a re-run of the same export adds nothing, see
    EventStore.append_new; `dated[i]`: row i had its own timestamp), then recompute the vector of every shopper in
    the file (in bulk, `progress` told per chunk: an earlier run cut short before this step is completed) and
    popularity, so their feeds are personal without waiting for a job."""
    appended = store.append_new(events, now, dated)
    customers = sorted({e.customer_id for e in events})
    vectors = updater.refresh(customers, progress=progress)
    return ImportedEvents(len(appended.event_ids), appended.skipped, len(customers), vectors,
                          recommender.refresh_popularity())
