"""/analytics: what the recommendations led to (admin); /metrics: Prometheus metrics of the process."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from prometheus_client import CONTENT_TYPE_LATEST

from appliance.types import now_utc
from jobs.attribution import analytics
from web.access import Scope, needs
from web.schemas import AnalyticsOut, AnalyticsRow
from web.services import Services

_MOMENT = "ISO 8601 date or date-time (UTC when naive)"


class AnalyticsController(Controller):
    path = "/analytics"
    tags = ["analytics"]

    @get("/", operation_id="analytics", sync_to_thread=True, opt=needs(Scope.ADMIN))
    def analytics(
        self, state: State,
        start: Annotated[str | None, QueryParameter(name="from", max_length=40, description=_MOMENT)] = None,
        end: Annotated[str | None, QueryParameter(name="to", max_length=40, description=_MOMENT)] = None,
    ) -> AnalyticsOut:
        """Impressions, clicks, carts, purchases, click-through and conversion per widget, source, model version
        and day, for recommendations served in [from, to) (default: the last 7 days; a date `to` includes that
        day); admin."""
        services: Services = state.services
        window = services.config.analytics.attribution_window_hours
        result = analytics(services.impressions, window, start, end, now_utc())
        rows = [
            AnalyticsRow(r.widget, r.source, r.model_version, r.day, r.impressions, r.clicks, r.carts, r.purchases,
                         r.click_through_rate, r.conversion_rate)
            for r in result.rows
        ]
        return AnalyticsOut(result.start.replace(tzinfo=UTC), result.end.replace(tzinfo=UTC), window, result.totals(),
                            rows)


class MetricsController(Controller):
    path = "/metrics"
    tags = ["health"]

    @get("/", operation_id="metrics", sync_to_thread=True, opt=needs(Scope.SERVER))
    def metrics(self, state: State) -> Response[bytes]:
        """Prometheus text format: request latency per route, ingest, queue, consumer lag, embedding backlog,
        serving model and its NDCG@10, job runs, index sizes, impressions, rate-limit refusals (an operational read,
        like /queue: the server scope)."""
        services: Services = state.services
        return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
