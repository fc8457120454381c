"""Read-only aggregates of the events and impressions tables for the operator's dashboard."""

from __future__ import annotations

from datetime import datetime

from appliance.types import Event
from storage.db import Database


class Activity:
    def __init__(self, db: Database) -> None:
        self.db = db

    def events_per_hour(self, since: datetime) -> list[tuple[datetime, int]]:
        """(hour, events) for every hour with events since `since`, oldest first."""
        return self.db.read(
            """SELECT date_trunc('hour', ts) AS hour, count(*) FROM events WHERE ts >= ?
               GROUP BY hour ORDER BY hour""", [since])

    def feeds_per_hour(self, since: datetime) -> list[tuple[datetime, int]]:
        """(hour, answers served) from the impressions: one recommendation id is one answer."""
        return self.db.read(
            """SELECT date_trunc('hour', served_at) AS hour, count(DISTINCT recommendation_id) FROM impressions
               WHERE served_at >= ? GROUP BY hour ORDER BY hour""", [since])

    def recent_events(self, customer_id: int, limit: int) -> list[Event]:
        """A shopper's newest events, newest first."""
        rows = self.db.read(
            """SELECT customer_id, product_id, event_name, ts, recommendation_id, position FROM events
               WHERE customer_id = ? ORDER BY ts DESC, event_id DESC LIMIT ?""", [customer_id, limit])
        return [Event(*row) for row in rows]

    def product_events_per_day(self, product_id: int, since: datetime) -> list[tuple[datetime, str, int]]:
        """(day, event name, count) of one product's events since `since`, oldest first."""
        return self.db.read(
            """SELECT CAST(date_trunc('day', ts) AS TIMESTAMP) AS day, event_name, count(*) FROM events
               WHERE product_id = ? AND ts >= ? GROUP BY ALL ORDER BY day, event_name""", [product_id, since])

    def product_totals(self, product_id: int) -> dict[str, int]:
        """Every event name's count for one product (all time)."""
        return dict(self.db.read(
            "SELECT event_name, count(*) FROM events WHERE product_id = ? GROUP BY event_name", [product_id]))
