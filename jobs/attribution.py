"""Attribution: a recommendation id on every answer, impressions recorded off the request path, analytics.

A feed answer gets a fresh `recommendation_id`; what it showed (customer, widget, each item's product, position
and source, the serving model version, the time) goes into an in-memory buffer that a writer thread flushes to
DuckDB in batches every `analytics.flush_seconds`. The buffer is bounded (`analytics.buffer_max` items): when
DuckDB cannot keep up, new impressions are dropped and counted, the feed never waits. A crash loses at most the
impressions of the last flush interval; events are written before their 202 and are never lost this way.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from appliance.config_sections import AnalyticsConfig
from appliance.errors import InvalidInput
from appliance.types import Scored, utc_naive
from storage.impressions import AttributedRow, ImpressionStore, Served, rate

log = logging.getLogger("appliance.attribution")
MAX_RANGE_DAYS = 366


def new_recommendation_id() -> str:
    return secrets.token_urlsafe(12)


class ImpressionLog:
    """A bounded buffer of served answers and the thread that writes them in batches."""

    def __init__(
        self, store: ImpressionStore, config: AnalyticsConfig, clock: Callable[[], datetime],
        customer_keys: Callable[[Sequence[str]], Sequence[int]],
        on_written: Callable[[int], None] = lambda n: None, on_dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.store = store
        self.customer_keys = customer_keys  # shop ids -> keys, created for a shopper not seen before
        self.enabled = config.impressions
        self.flush_seconds = config.flush_seconds
        self.buffer_max = config.buffer_max
        self.clock = clock
        self.on_written = on_written
        self.on_dropped = on_dropped
        self._buffer: list[Served] = []  # customer_id is still the shop's id here; its key is looked up at flush
        self._items = 0  # items in the buffer
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time (the writer thread, or a reader asking)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)

    def served(self, customer_id: str, widget: str, items: Sequence[Scored], first_position: int,
               model_version: str) -> str:
        """A new recommendation id for an answer to the shop's `customer_id`; its items (product keys) are
        buffered, not written here. Cheap: one append."""
        rid = new_recommendation_id()
        if not self.enabled or not items:
            return rid
        entry = Served(rid, customer_id, widget, items, first_position, model_version, self.clock())
        with self._lock:
            dropped = self._items + len(items) > self.buffer_max
            if not dropped:
                self._buffer.append(entry)
                self._items += len(items)
        if dropped:
            self.on_dropped(len(items))
        return rid

    @property
    def buffered(self) -> int:
        return self._items

    def flush(self) -> int:
        """Write what is buffered now, in one transaction; how many items. On a failure they stay buffered."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer, self._items = self._buffer, [], 0
            if not batch:
                return 0
            try:
                keys = self.customer_keys([entry.customer_id for entry in batch])
                written = self.store.append([replace(e, customer_id=k) for e, k in zip(batch, keys, strict=True)])
            except Exception:
                with self._lock:  # keep them for the next flush, within the bound
                    room = self.buffer_max - self._items
                    kept = []
                    for entry in batch:
                        if len(entry.items) > room:
                            self.on_dropped(len(entry.items))
                            continue
                        kept.append(entry)
                        room -= len(entry.items)
                    self._buffer[:0] = kept
                    self._items += sum(len(e.items) for e in kept)
                raise
            self.on_written(written)
            return written

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def close(self) -> None:
        """Stop the writer and write what is left (a clean shutdown loses no impression)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        try:
            self.flush()
        except Exception:
            log.exception("impressions could not be written at shutdown")

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # e.g. a read-only disk: retried at the next interval, the feed is not affected
                log.exception("writing impressions failed; retrying in %.1f s", self.flush_seconds)


@dataclass(frozen=True)
class Analytics:
    start: datetime
    end: datetime
    window_hours: float
    rows: list[AttributedRow]

    def totals(self) -> dict[str, float]:
        """impressions, clicks, carts, purchases over every row, and click-through and conversion rates."""
        sums = {k: sum(getattr(r, k) for r in self.rows) for k in ("impressions", "clicks", "carts", "purchases")}
        return {**sums, "click_through_rate": rate(sums["clicks"], sums["impressions"]),
                "conversion_rate": rate(sums["purchases"], sums["impressions"])}


def analytics(impressions: ImpressionLog, window_hours: float, start: str | None, end: str | None,
              now: datetime) -> Analytics:
    """Impressions served in [from, to) and what they led to (default: the last 7 days up to now). Buffered
    impressions are written first, so an answer served a moment ago is counted."""
    end_at = _moment(end, "to") if end else now
    start_at = _moment(start, "from") if start else end_at - timedelta(days=7)
    if start_at >= end_at:
        raise InvalidInput("from must be before to", field="from")
    if end_at - start_at > timedelta(days=MAX_RANGE_DAYS):
        raise InvalidInput(f"the range may span at most {MAX_RANGE_DAYS} days", field="from")
    impressions.flush()
    rows = impressions.store.attributed(start_at, end_at, window_hours * 3600.0)
    return Analytics(start_at, end_at, window_hours, rows)


def _moment(text: str, field: str) -> datetime:
    """ISO 8601: a date-time (naive means UTC), or a date: its midnight for `from`, the next midnight for `to`
    (so `to=2026-11-30` includes that day)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{field} must be an ISO 8601 date or date-time, got {text!r}", field=field) from None
    if len(text.strip()) == 10 and field == "to":
        moment += timedelta(days=1)
    return utc_naive(moment)
