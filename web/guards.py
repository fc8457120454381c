"""The admin guard: admin endpoints need the X-Admin-Key header to match server.admin_key."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler


def admin_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    key = connection.app.state.services.config.server.admin_key
    if not key:
        raise PermissionDeniedException("admin endpoints are disabled: set server.admin_key to use them")
    given = connection.headers.get("x-admin-key", "")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise NotAuthorizedException("a valid X-Admin-Key header is required")
