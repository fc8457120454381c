"""/dashboard: the operator's pages (admin), server-rendered from the same use cases and stores as the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from appliance.finish import Finish
from appliance.pipeline import FeedQuery
from appliance.types import Pick, Product, now_utc
from jobs.dashboard import overview
from jobs.widgets import Ask, recommend
from storage.activity import Activity
from web.access import BASIC_OPT, Scope, needs
from web.controllers.jobs import job_out
from web.dashboard.charts import line_chart
from web.services import Services

HERE = Path(__file__).parent
ASSETS = create_static_files_router(path="/dashboard/static", directories=[HERE / "static"], include_in_schema=False,
                                    name="dashboard-assets", opt=needs(Scope.OPEN))  # a stylesheet: no secret
RECENT = 20  # interactions shown in the customer inspector
IdQuery = Annotated[str | None, QueryParameter(name="id", max_length=128, description="the shop's id")]


def templates() -> TemplateConfig:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def _page(name: str, services: Services, **context: Any) -> Template:
    serving = services.serving.get()
    return Template(template_name=f"{name}.html", context={
        "page": name, "serving": serving.version, "fallback": serving.model is None, "now": now_utc(), **context})


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


class DashboardController(Controller):
    path = "/dashboard"
    include_in_schema = False
    opt = {**needs(Scope.ADMIN), BASIC_OPT: True}  # a browser asks for the admin key (HTTP Basic: any user name)

    @get("/", sync_to_thread=True)
    def overview(self, state: State) -> Template:
        """Events and feeds per hour, click-through per source per day, queue and embedding backlog."""
        s: Services = state.services
        now = now_utc()
        view = overview(Activity(s.db), s.impressions, s.config.analytics.attribution_window_hours, s.queue.stats(),
                        s.catalog.store.pending_count(), now)
        span = (view.since, now)
        charts = {
            "events": line_chart({"events": view.events_per_hour}, "Events per hour", bars=True, span=span),
            "feeds": line_chart({"feeds": view.feeds_per_hour}, "Feeds served per hour", bars=True, span=span),
            "ctr": line_chart(view.click_through, "Click-through per source, per day", percent=True, wide=True),
        }
        return _page("overview", s, view=view, charts=charts, products=s.catalog.store.count(),
                     events=s.events.count(), users=s.users.count(), processed=s.consumer.processed)

    @get("/models", sync_to_thread=True)
    def models(self, state: State) -> Template:
        """Every model version's NDCG@10 beside the baselines it was judged against, and the decision."""
        s: Services = state.services
        versions = s.models.candidates()
        series: dict[str, list] = {}
        for info in versions:
            when = datetime.strptime(info["version"], "%Y%m%dT%H%M%S.%fZ")
            for name, row in (info.get("evaluation") or {"candidate": info.get("metrics") or {}}).items():
                if "ndcg@10" in row:
                    series.setdefault("model" if name == "candidate" else name, []).append((when, row["ndcg@10"]))
        series = {**{k: v for k, v in series.items() if k != "model"}, "model": series.get("model", [])}  # on top
        chart = line_chart(series, "NDCG@10 of each version and its baselines", wide=True)
        return _page("models", s, versions=list(reversed(versions)), chart=chart, when=_when)

    @get("/jobs", sync_to_thread=True)
    def jobs(self, state: State) -> Template:
        """Every job: schedule, next run, its runs with durations and outcomes."""
        s: Services = state.services
        jobs = [job_out(s, name) for name in s.jobs.specs]
        durations = {j.name: [(r.started_at, r.seconds) for r in s.jobs.runs.history(j.name, 50)] for j in jobs}
        chart = line_chart({n: v for n, v in durations.items() if v}, "Run durations (seconds)", wide=True)
        return _page("jobs", s, jobs=jobs, chart=chart)

    @get("/customer", sync_to_thread=True)
    def customer(self, state: State, customer_id: IdQuery = None) -> Template:
        """One shopper: recent interactions, where the vector came from, the feed with the reason of each item."""
        s: Services = state.services
        if not customer_id:
            return _page("customer", s, customer_id=None)
        key = s.ids.customers.key(customer_id)
        recent = Activity(s.db).recent_events(key, RECENT) if key is not None else []
        stored = s.users.get(key) if key is not None else None
        who = s.feeds.personal(key)
        feed = s.feeds.page(key, FeedQuery(1, s.config.feed.per_page))  # the API's feed; a look, not an impression
        products = s.recommender.view().products
        return _page("customer", s, customer_id=customer_id, known=key is not None, vector=stored,
                     personal=who is not None and who.vector is not None, feed=feed, products=products,
                     recent=[(e, products.get(e.product_id), s.ids.products.ext(e.product_id)) for e in recent],
                     ext=s.ids.products.ext)

    @get("/product", sync_to_thread=True)
    def product(self, state: State, product_id: IdQuery = None) -> Template:
        """One product: its line, its nearest products by vector, its events per day."""
        s: Services = state.services
        if not product_id:
            return _page("product", s, product_id=None)
        key = s.ids.products.key(product_id)
        products = s.recommender.view().products
        if key is None or key not in products:
            return _page("product", s, product_id=product_id, found=False)
        stored = s.catalog.store.get(key)
        widgets = {model: _widget(s, model, key) for model in ("looking-similar", "related", "bought-together")}
        activity = Activity(s.db)
        per_day: dict[str, list] = {}
        for day, name, count in activity.product_events_per_day(key, now_utc() - timedelta(days=30)):
            per_day.setdefault(name.removeprefix("product_"), []).append((day, float(count)))
        chart = line_chart(per_day, "Events per day (30 days)")
        return _page("product", s, product_id=product_id, found=True, stored=stored, widgets=widgets, chart=chart,
                     totals=activity.product_totals(key))


def _widget(s: Services, model: str, key: int) -> list[tuple[str, Product, Pick]]:
    """What the storefront's widget answers for this product page (the same use case as the API)."""
    ask = Ask(model, (key,), None, Finish(FeedQuery(), s.config.widgets.k))
    picks = recommend(s.widgets, ask, s.widgets.call(blocking=True))
    products = s.recommender.view().products
    return [(s.ids.products.ext(p.product_id), products[p.product_id], p) for p in picks if p.product_id in products]
