"""What the operator's dashboard shows, computed by the same use cases as the API (analytics, queue stats)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from jobs.attribution import ImpressionLog, analytics
from jobs.queue import QueueStats
from storage.activity import Activity
from storage.impressions import rate

Series = list[tuple[datetime, float]]


@dataclass(frozen=True)
class Overview:
    since: datetime
    events_per_hour: Series
    feeds_per_hour: Series
    click_through: dict[str, list[tuple[date, float]]]  # per source, per day (GET /analytics summed per source)
    totals: dict[str, float]  # GET /analytics' totals over the same days
    queue: QueueStats
    backlog: int  # product lines waiting for their vector


def overview(activity: Activity, impressions: ImpressionLog, window_hours: float, queue: QueueStats, backlog: int,
             now: datetime, hours: int = 48, days: int = 7) -> Overview:
    """The first screen: the last `hours` of events and feeds per hour, click-through per source per day over
    the last `days` (the /analytics use case), queue and embedding backlog now."""
    since = now - timedelta(hours=hours)
    report = analytics(impressions, window_hours, (now - timedelta(days=days)).isoformat(), None, now)
    sums: dict[str, dict[date, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for row in report.rows:
        cell = sums[row.source][row.day]
        cell[0] += row.clicks
        cell[1] += row.impressions
    click_through = {source: [(day, rate(c, i)) for day, (c, i) in sorted(by_day.items())]
                     for source, by_day in sorted(sums.items())}
    return Overview(since, [(h, float(n)) for h, n in activity.events_per_hour(since)],
                    [(h, float(n)) for h, n in activity.feeds_per_hour(since)], click_through, report.totals(),
                    queue, backlog)
