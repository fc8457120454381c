"""create_app(config): the Litestar app and its lifespan (the composition root, with the CLI beside it)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from appliance.config import Config
from appliance.encoder import Encoder
from web.body import decode_json_body
from web.controllers.events import EventController
from web.controllers.feeds import CustomerController
from web.controllers.health import HealthController
from web.controllers.jobs import JobController
from web.controllers.products import ProductController
from web.controllers.queue import ModelController, QueueController
from web.controllers.rules import RuleController
from web.controllers.sync import SyncController
from web.controllers.widgets import WidgetController
from web.errors import EXCEPTION_HANDLERS
from web.services import Services, build_services, start

log = logging.getLogger("appliance")


def create_app(config: Config, encoder: Encoder | None = None) -> Litestar:
    """The app; `encoder` lets tests share one loaded model across apps."""

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

    return Litestar(
        route_handlers=[
            ProductController, EventController, CustomerController, QueueController, ModelController, JobController,
            SyncController, HealthController, WidgetController, RuleController,
        ],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=decode_json_body,
        openapi_config=OpenAPIConfig(
            title="appliance", version="0.1.0", path="/schema",
            description="A self-hosted two-tower recommendation server.",
            render_plugins=[SwaggerRenderPlugin(path="/docs"), ScalarRenderPlugin(path="/scalar")],
        ),
    )


async def _start_in_thread(services: Services) -> None:
    # A failure is already logged and shown by /health/ready; the process keeps serving /health.
    with contextlib.suppress(Exception):
        await anyio.to_thread.run_sync(start, services)
