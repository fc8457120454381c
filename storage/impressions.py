"""Impressions in DuckDB (what each recommendation showed) and the attribution query over them and the events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from storage.db import Database

# An event carrying a recommendation id counts for that recommendation's impression of the same product.
# A cart or purchase without one counts for the latest such click or cart of the same shopper and product
# that came at most the attribution window before it (the ASOF join below). Each impression counts at most
# once as clicked, carted and purchased.
_ATTRIBUTION = """
WITH shown AS (
    SELECT * FROM impressions WHERE served_at >= $1::TIMESTAMP AND served_at < $2::TIMESTAMP
),
tagged AS (
    SELECT e.customer_id, e.product_id, e.event_name, e.ts, e.recommendation_id
    FROM events e JOIN shown s ON e.recommendation_id = s.recommendation_id AND e.product_id = s.product_id
    WHERE e.recommendation_id IS NOT NULL
),
touches AS (
    SELECT * FROM tagged WHERE event_name IN ('product_clicked', 'product_added_to_cart')
),
followers AS (
    SELECT t.recommendation_id, t.product_id, e.event_name
    FROM (SELECT * FROM events WHERE recommendation_id IS NULL AND ts >= $1::TIMESTAMP
          AND event_name IN ('product_added_to_cart', 'product_purchased')) e
    ASOF JOIN touches t ON e.customer_id = t.customer_id AND e.product_id = t.product_id AND e.ts >= t.ts
    WHERE epoch(e.ts) - epoch(t.ts) <= $3
),
acted AS (
    SELECT recommendation_id, product_id,
           bool_or(event_name = 'product_clicked') AS clicked,
           bool_or(event_name = 'product_added_to_cart') AS carted,
           bool_or(event_name = 'product_purchased') AS purchased
    FROM (SELECT recommendation_id, product_id, event_name FROM tagged
          UNION ALL SELECT recommendation_id, product_id, event_name FROM followers)
    GROUP BY recommendation_id, product_id
)
SELECT s.widget, s.source, s.model_version, CAST(s.served_at AS DATE) AS day,
       count(*) AS impressions,
       count(*) FILTER (WHERE a.clicked) AS clicks,
       count(*) FILTER (WHERE a.carted) AS carts,
       count(*) FILTER (WHERE a.purchased) AS purchases
FROM shown s LEFT JOIN acted a ON s.recommendation_id = a.recommendation_id AND s.product_id = a.product_id
GROUP BY ALL
ORDER BY day, s.widget, s.source, s.model_version
"""


@dataclass(frozen=True, slots=True)
class Served:
    """One recommendation answer: which products it showed, in order, and why each was there."""

    recommendation_id: str
    customer_id: int
    widget: str  # "feed" today; each widget its own name
    product_ids: Sequence[int]
    sources: Sequence[str]  # per item: personal / popular / new / price / ...
    first_position: int  # 1-based position of the first item (page 2 of 20 starts at 21)
    model_version: str  # the user tower serving when it was shown ("mean": the fallback)
    served_at: datetime  # naive UTC


@dataclass(frozen=True, slots=True)
class AttributedRow:
    widget: str
    source: str
    model_version: str
    day: date
    impressions: int
    clicks: int  # impressions clicked at least once
    carts: int
    purchases: int

    @property
    def click_through_rate(self) -> float:
        return rate(self.clicks, self.impressions)

    @property
    def conversion_rate(self) -> float:
        return rate(self.purchases, self.impressions)


def rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


class ImpressionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, served: Sequence[Served]) -> int:
        """Write many answers' items in one transaction (one row per item, column lists unnested); how many rows."""
        columns: tuple[list, ...] = ([], [], [], [], [], [], [], [])
        rid, customer, widget, product, position, source, version, at = columns
        for s in served:
            n = len(s.product_ids)
            rid += [s.recommendation_id] * n
            customer += [s.customer_id] * n
            widget += [s.widget] * n
            product += list(s.product_ids)
            position += range(s.first_position, s.first_position + n)
            source += list(s.sources)
            version += [s.model_version] * n
            at += [s.served_at] * n
        if not rid:
            return 0
        with self.db.write() as cur:
            cur.execute(
                """INSERT INTO impressions SELECT unnest($1::VARCHAR[]), unnest($2::BIGINT[]), unnest($3::VARCHAR[]),
                       unnest($4::BIGINT[]), unnest($5::INTEGER[]), unnest($6::VARCHAR[]), unnest($7::VARCHAR[]),
                       unnest($8::TIMESTAMP[])""",
                list(columns),
            )
        return len(rid)

    def attributed(self, start: datetime, end: datetime, window_seconds: float) -> list[AttributedRow]:
        """Impressions served in [start, end) with the clicks, carts and purchases attributed to them, per
        widget, source, model version and day."""
        rows = self.db.read(_ATTRIBUTION, [start, end, window_seconds])
        return [AttributedRow(*row) for row in rows]

    def erase_in(self, cur, customer_id: int) -> int:
        """Delete a shopper's impressions (a privacy request); how many rows."""
        return len(cur.execute("DELETE FROM impressions WHERE customer_id = ? RETURNING 1", [customer_id]).fetchall())

    def delete_before(self, before: datetime) -> int:
        with self.db.write() as cur:
            return len(cur.execute("DELETE FROM impressions WHERE served_at < ? RETURNING 1", [before]).fetchall())

    def count(self) -> int:
        return self.db.read("SELECT count(*) FROM impressions")[0][0]
