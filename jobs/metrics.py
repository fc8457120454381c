"""Prometheus metrics: one registry per process, built at start-up, updated where the work happens.

Counters and histograms are observed by the code doing the work (requests, ingest, jobs, the consumer, the
impression writer, rate limits); gauges of state (queue, backlog, indexes, serving model) are read when
`/metrics` is scraped, from callables the composition root hands over. Names are in base units with the unit as
suffix; labels take few values (route templates, event names, job names, outcomes), never an id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "appliance"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# labels -> value; a gauge without labels reads {(): value}
Reading = Callable[[], Mapping[tuple[str, ...], float]]


@dataclass(frozen=True)
class Gauge:
    name: str
    doc: str
    labels: tuple[str, ...]
    read: Reading


class Metrics:
    """The appliance's metrics. `registry` is what `/metrics` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            f"{PREFIX}_request_duration_seconds", "HTTP requests by method, route template and status",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.events_ingested = Counter(
            f"{PREFIX}_events_ingested", "Events written to DuckDB by POST /events", ["event_name"], registry=r,
        )
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limit_refusals", "Requests refused by a rate limit (429), by the limit that refused",
            ["limit"], registry=r,
        )
        self.job_seconds = Histogram(
            f"{PREFIX}_job_duration_seconds", "Runs of the scheduled jobs by job and outcome (ok / failed)",
            ["job", "outcome"], buckets=JOB_BUCKETS, registry=r,
        )
        self.consumer_lag = Histogram(
            f"{PREFIX}_consumer_lag_seconds", "From an event message's send to its processing by the consumer",
            buckets=LAG_BUCKETS, registry=r,
        )
        self.queue_outages = Counter(
            f"{PREFIX}_queue_outages", "Spells in which the consumer or the SQS outbox sender could not reach SQS "
            "(cause sqs) or write the store (cause store), counted when one starts", ["part", "cause"], registry=r,
        )
        self.impressions_written = Counter(
            f"{PREFIX}_impressions_written", "Impressions (served items) written to DuckDB", registry=r,
        )
        self.impressions_dropped = Counter(
            f"{PREFIX}_impressions_dropped", "Impressions dropped because the buffer was full", registry=r,
        )
        self._gauges: list[Gauge] = []
        self._info: tuple[str, str, Callable[[], Mapping[str, str]]] | None = None
        r.register(_StateCollector(self.state))

    def gauge(self, name: str, doc: str, read: Reading | Callable[[], float | None],
              labels: tuple[str, ...] = ()) -> None:
        """A gauge read at scrape time: `read()` gives a number (None: no sample now), or {label values: number}
        when `labels` are named."""
        def single() -> Mapping[tuple[str, ...], float]:
            value = read()
            return {} if value is None else {(): float(value)}

        self._gauges.append(Gauge(f"{PREFIX}_{name}", doc, labels, read if labels else single))

    def info(self, name: str, doc: str, read: Callable[[], Mapping[str, str]]) -> None:
        """An info metric (value 1, the facts as labels) read at scrape time, e.g. the serving model's version."""
        self._info = (f"{PREFIX}_{name}", doc, read)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def state(self) -> Iterable[Metric]:
        """The gauges and the info metric, read now."""
        for g in self._gauges:
            family = GaugeMetricFamily(g.name, g.doc, labels=list(g.labels))
            for labels, value in g.read().items():
                family.add_metric(list(labels), value)
            yield family
        if self._info is not None:
            name, doc, read = self._info
            family = InfoMetricFamily(name, doc)
            family.add_metric([], dict(read()))
            yield family


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        return self.read()
