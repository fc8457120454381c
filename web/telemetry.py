"""Logs and request telemetry: one log format for the whole process, one line and one latency sample per request.

`configure_logging` gives every logger (the appliance's, uvicorn's, libraries') one handler with one format,
text or JSON (`[logging] format`). `observe_requests` wraps the app: for every HTTP request it records the
latency in `appliance_request_duration_seconds` by route template (never the raw path, which holds ids) and
logs one line with method, route, status, duration and whatever the handler noted (the recommendation id).
It replaces uvicorn's access log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.config_sections import LoggingConfig

request_log = logging.getLogger("appliance.http")
_NOTES = "appliance_log_fields"  # scope["state"] key of the fields a handler adds to its request line
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_HANDLER = "appliance"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        body.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(config: LoggingConfig, stream: IO[str] | None = None) -> logging.Handler:
    """Route every record through one handler on the root logger, in the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:  # ours from an earlier call only
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # job runs are recorded in DuckDB and /jobs
    return handler


def quiet_progress_bars() -> None:
    """No progress bars in a server's log: transformers' weight loading and any tqdm (set before they load)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"


def note(request: Request, **fields: Any) -> None:
    """Add fields to this request's log line (e.g. recommendation_id)."""
    request.scope.setdefault("state", {}).setdefault(_NOTES, {}).update(fields)


def _log_request(method: str, route: str, scope: Scope, status: int, seconds: float) -> None:
    """The request's line, made as `request_log.info` would but without its search of the stack for the caller
    (a request line has no caller worth naming; the search was a quarter of the line's cost)."""
    fields = scope.get("state", {}).get(_NOTES, {})
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    request_log.handle(request_log.makeRecord(
        request_log.name, logging.INFO, __file__, 0, "%s %s %d %.1f ms%s",
        (method, route, status, seconds * 1000, extra), None, "observe_requests",
        {"method": method, "route": route, "path": scope["path"], "status": status,
         "duration_ms": round(seconds * 1000, 3), **fields},
    ))


def observe_requests(app: ASGIApp, litestar_app: Any) -> ASGIApp:
    """Wrap the app's ASGI handler (outermost, so 404s and refusals by other middleware are seen too)."""

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_and_see)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            services = getattr(litestar_app.state, "services", None)
            if services is not None:
                services.metrics.request_seconds.labels(method, route, str(status)).observe(seconds)
            if request_log.isEnabledFor(logging.INFO):
                _log_request(method, route, scope, status, seconds)

    return observed
