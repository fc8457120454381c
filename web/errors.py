"""The one place where errors become HTTP problem bodies (RFC 9457, application/problem+json)."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.errors import ApplianceError, InvalidInput, NotFound, NotReady, StoreLocked

log = logging.getLogger("appliance.web")

_STATUS: dict[type[ApplianceError], tuple[int, str]] = {
    InvalidInput: (422, "invalid-input"),
    NotFound: (404, "not-found"),
    NotReady: (503, "not-ready"),
    StoreLocked: (503, "store-locked"),
}
_AT = re.compile(r"at `\$\.?([^`]*)`")


def problem(status: int, kind: str, detail: str, **extra: Any) -> Response:
    body = {"type": f"/problems/{kind}", "title": kind.replace("-", " "), "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"Retry-After": "5"} if status == 503 else None
    return Response(body, status_code=status, media_type="application/problem+json", headers=headers)


def _field_of(message: str) -> str | None:
    match = _AT.search(message)
    return match.group(1) or None if match else None


def handle_appliance_error(_: Request, exc: ApplianceError) -> Response:
    status, kind = _STATUS.get(type(exc), (500, "internal-error"))
    return problem(status, kind, str(exc), field=getattr(exc, "field", None))


def handle_validation_error(_: Request, exc: ValidationException) -> Response:
    """Litestar/msgspec rejected a body or a parameter: name the field."""
    errors = [e for e in (exc.extra or []) if isinstance(e, dict)]
    messages = [str(e.get("message", "")) for e in errors] or [exc.detail]
    fields = [e.get("key") or _field_of(str(e.get("message", ""))) for e in errors]
    field = next((f for f in fields if f), None)
    return problem(400, "invalid-request", "; ".join(messages), field=field, errors=errors or None)


def handle_http_error(_: Request, exc: HTTPException) -> Response:
    kind = re.sub(r"[^a-z]+", "-", exc.detail.lower()).strip("-") if exc.status_code < 500 else "server-error"
    return problem(exc.status_code, kind or "error", exc.detail)


def handle_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return problem(500, "internal-error", "an unexpected error occurred; it has been logged")


EXCEPTION_HANDLERS = {
    ApplianceError: handle_appliance_error,
    ValidationException: handle_validation_error,
    HTTPException: handle_http_error,
    Exception: handle_unexpected,
}
