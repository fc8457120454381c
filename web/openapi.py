"""The OpenAPI document says what the server enforces: each operation's scope (from the same `opt` the guard
reads) as its security requirement, and the configured batch caps as `maxItems` of the bodies."""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPI, Operation, Reference, Schema
from litestar.routes import HTTPRoute

from appliance.config import Config
from web.access import Scope, required_scope

# operationId -> the config value its handler enforces as the most items of a list body
BATCH_CAPS: dict[str, Callable[[Config], int]] = {
    "postProducts": lambda c: c.catalog.max_bulk,
    "postEvents": lambda c: c.events.max_batch,
}


def describe_limits(app: Litestar, config: Config) -> None:
    """Write scopes and caps into the app's (cached) OpenAPI object, once, at start."""
    openapi: OpenAPI = app.openapi_schema
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in (openapi.paths or {}):
            continue
        item = openapi.paths[route.path_format]
        for handler in route.route_handlers:
            if not isinstance(handler, HTTPRouteHandler) or not handler.resolve_include_in_schema():
                continue
            for method in handler.http_methods:
                operation = getattr(item, method.lower(), None)
                if isinstance(operation, Operation):
                    _describe(operation, required_scope(handler), config)


def _describe(operation: Operation, scope: Scope, config: Config) -> None:
    if scope is not Scope.OPEN:
        role = [scope.name.lower()]
        operation.security = [{"bearer": role}, {"apiKey": role}]
        operation.description = (operation.description or "") + f"\n\nNeeds a **{role[0]}** key (or a stronger one)."
    cap = BATCH_CAPS.get(operation.operation_id or "")
    if cap is None or operation.request_body is None or isinstance(operation.request_body, Reference):
        return
    for media in operation.request_body.content.values():
        for schema in _arrays(media.schema):
            schema.max_items = cap(config)
            schema.min_items = 1


def _arrays(schema: Schema | Reference | None) -> list[Schema]:
    """The array schemas of a body: the body itself, or the branches of `one_of` (an item or a list)."""
    if not isinstance(schema, Schema):
        return []
    if schema.type == "array" or getattr(schema.type, "value", None) == "array":
        return [schema]
    return [s for branch in (schema.one_of or schema.any_of or []) for s in _arrays(branch)]
