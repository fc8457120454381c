"""The one place where errors become HTTP problem bodies (RFC 9457, application/problem+json)."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.errors import ApplianceError, InvalidInput, NotFound, NotReady, StoreLocked, StoreUnavailable
from web.body import MalformedBody
from web.schemas import PATTERNS

log = logging.getLogger("appliance.web")

_STATUS: dict[type[ApplianceError], tuple[int, str]] = {
    InvalidInput: (422, "invalid-input"),
    NotFound: (404, "not-found"),
    NotReady: (503, "not-ready"),
    StoreLocked: (503, "store-locked"),
    StoreUnavailable: (503, "store-unavailable"),
    MalformedBody: (400, "malformed-body"),
}
_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


def _body(status: int, kind: str, detail: str, **extra: Any) -> dict[str, Any]:
    body = {"type": f"/problems/{kind}", "title": kind.replace("-", " "), "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem(status: int, kind: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = _body(status, kind, detail, **extra)
    if status == 503:
        headers = {"Retry-After": "5", **(headers or {})}
    return Response(body, status_code=status, media_type="application/problem+json", headers=headers)


def field_of(message: str) -> str | None:
    """The field a msgspec message points at: `$.data[0].price` -> `[0].price` (the body is `data`)."""
    match = _AT.search(message)
    path = re.sub(r"^data\.?", "", match.group(1)) if match else ""
    missing = _MISSING.search(message)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path or None


def problem_of(exc: ApplianceError) -> tuple[int, dict[str, Any]]:
    """The status and problem body of a domain error (one entry of a batch answer carries it too)."""
    status, kind = _STATUS.get(type(exc), (500, "internal-error"))
    return status, _body(status, kind, str(exc), field=getattr(exc, "field", None))


def handle_appliance_error(_: Request, exc: ApplianceError) -> Response:
    status, kind = _STATUS.get(type(exc), (500, "internal-error"))
    return problem(status, kind, str(exc), field=getattr(exc, "field", None))


def handle_validation_error(_: Request, exc: ValidationException) -> Response:
    """Litestar/msgspec rejected a body or a parameter: name the field (msgspec's own message keeps the path)."""
    errors = [e for e in (exc.extra or []) if isinstance(e, dict)]
    cause = str(exc.__cause__) if isinstance(exc.__cause__, msgspec.ValidationError) else ""
    field = field_of(cause) if cause else None
    if field is None:
        field = next((e["key"] for e in errors if e.get("key") and e["key"] != "data"), None)
    if field == "data" or (field is None and any(e.get("source") == "body" for e in errors)):
        field = "$"  # the body as a whole (wrong type, missing)
    detail = cause.split(" - at ")[0] if cause else "; ".join(str(e.get("message", "")) for e in errors)
    detail = next((f"Expected {meaning}" for pattern, meaning in PATTERNS.items() if repr(pattern) in detail), detail)
    return problem(400, "invalid-request", detail or exc.detail, field=field, errors=errors or None)


def handle_http_error(_: Request, exc: HTTPException) -> Response:
    """Litestar's own errors (404, 405, 413, ...) and the guards' and middleware's (401, 403, 408, 415, 421,
    429): their headers (WWW-Authenticate, Retry-After, Connection) and the field at fault pass through."""
    kind = re.sub(r"[^a-z]+", "-", HTTPStatus(exc.status_code).phrase.lower()).strip("-")
    field = exc.extra.get("field") if isinstance(exc.extra, dict) else None
    return problem(exc.status_code, kind, exc.detail, headers=exc.headers, field=field)


def handle_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return problem(500, "internal-error", "an unexpected error occurred; it has been logged")


EXCEPTION_HANDLERS = {
    ApplianceError: handle_appliance_error,
    ValidationException: handle_validation_error,
    HTTPException: handle_http_error,
    Exception: handle_unexpected,
}
