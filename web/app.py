"""create_app(config): the Litestar app and its lifespan (the composition root, with the CLI beside it)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components

from appliance.config import Config
from appliance.encoder import Encoder
from web.access import Access, Scope, authorize, check_exposure, needs, security_schemes
from web.body import decode_json_body
from web.browser import browser_safety, cors
from web.controllers.analytics import AnalyticsController, MetricsController
from web.controllers.events import EventController
from web.controllers.feeds import CustomerController
from web.controllers.health import HealthController
from web.controllers.jobs import JobController
from web.controllers.products import ProductController
from web.controllers.queue import ModelController, QueueController
from web.controllers.rules import RuleController
from web.controllers.sync import SyncController
from web.controllers.widgets import WidgetController
from web.dashboard.pages import ASSETS as DASHBOARD_ASSETS
from web.dashboard.pages import DashboardController, templates
from web.docs import SWAGGER_ASSETS, swagger_plugin
from web.errors import EXCEPTION_HANDLERS
from web.limits import body_timeout
from web.openapi import describe_limits
from web.services import Services, build_services
from web.startup import start
from web.telemetry import observe_requests

log = logging.getLogger("appliance")


def create_app(config: Config, encoder: Encoder | None = None) -> Litestar:
    """The app; `encoder` lets tests share one loaded model across apps. Refuses (InvalidInput) to serve
    beyond loopback without keys."""
    check_exposure(config)
    security = config.security

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services: Services = await anyio.to_thread.run_sync(build_services, config, encoder)
        app.state.services = services
        try:
            # Demo, index and model can take a while: serve /health (503 starting) meanwhile.
            # Shutting down waits for start-up to finish, so nothing is closed under its feet.
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_start_in_thread, services)
                yield
        finally:
            await anyio.to_thread.run_sync(services.close)

    app = Litestar(
        route_handlers=[
            ProductController, EventController, CustomerController, QueueController, ModelController, JobController,
            SyncController, HealthController, AnalyticsController, MetricsController, WidgetController, RuleController,
            SWAGGER_ASSETS, DashboardController, DASHBOARD_ASSETS,
        ],
        template_config=templates(),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        guards=[authorize],
        middleware=[browser_safety(config), body_timeout(security.body_timeout_seconds)],
        cors_config=cors(config),
        request_max_body_size=security.max_body_bytes,
        before_request=decode_json_body,
        logging_config=None,  # one format for the process: web.telemetry.configure_logging (the CLI calls it)
        openapi_config=OpenAPIConfig(
            title="appliance", version="0.1.0",
            description="A self-hosted two-tower recommendation server. Request bodies are JSON "
                        f"(`application/json`) of at most {security.max_body_bytes:,} bytes.",
            render_plugins=[swagger_plugin()],
            openapi_router=Router("/schema", route_handlers=[], include_in_schema=False, opt=needs(Scope.OPEN)),
            components=Components(security_schemes=security_schemes()),
        ),
    )
    app.asgi_handler = observe_requests(app.asgi_handler, app)
    app.state.access = Access(security, config.server.admin_key)
    describe_limits(app, config)
    return app


async def _start_in_thread(services: Services) -> None:
    # A failure is already logged and shown by /health/ready; the process keeps serving /health.
    with contextlib.suppress(Exception):
        await anyio.to_thread.run_sync(start, services)
