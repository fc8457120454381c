"""Browser safety: a Host allow-list (against DNS rebinding), JSON-only writes (against cross-site forms),
and CORS for the shop's storefront origins.

A page on another site can make a browser send a form or `text/plain` POST anywhere without asking (no
CORS preflight), and a rebinding DNS name can point at 127.0.0.1 while its pages keep their own origin: the
first gets 415 here (writes accept `application/json` only, which a cross-site page cannot send without a
preflight that CORS answers only for `security.cors_origins`), the second 421 (its Host is not ours).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from litestar.config.cors import CORSConfig
from litestar.datastructures import Headers
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, Scope, Send

from appliance.config import Config

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


def allowed_hosts(config: Config) -> frozenset[str]:
    """Loopback names, the address served on (unless a wildcard) and security.allowed_hosts, lower case."""
    names = {*LOOPBACK_NAMES, *config.security.allowed_hosts}
    if config.server.host not in _WILDCARD_BINDS:
        names.add(config.server.host)
    return frozenset(n.lower().strip("[]") for n in names)


def host_name(header: str) -> str:
    """`Host` without its port: `shop.example:8000` -> `shop.example`, `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


def host_allowed(name: str, allowed: Iterable[str]) -> bool:
    return any(a == "*" or a == name or (a.startswith("*.") and name.endswith(a[1:])) for a in allowed)


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class BrowserSafety:
    """ASGI middleware: 421 for a Host not allowed, 415 for a write whose body is not `application/json`."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers.from_scope(scope)
            host = host_name(headers.get("host", ""))
            if not host_allowed(host, self.hosts):
                raise HTTPException(
                    status_code=421, detail=f"Host {host!r} is not served here: add it to security.allowed_hosts",
                    extra={"field": "Host"})
            if scope["method"] in WRITE_METHODS:
                content_type = headers.get("content-type")
                has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
                if (content_type is not None or has_body) and not _is_json(content_type or ""):
                    raise HTTPException(
                        status_code=415, detail=f"a request body must be application/json, got {content_type!r}",
                        extra={"field": "Content-Type"})
        await self.app(scope, receive, send)


def browser_safety(config: Config) -> Callable[[ASGIApp], ASGIApp]:
    hosts = allowed_hosts(config)
    return lambda app: BrowserSafety(app, hosts)


def cors(config: Config) -> CORSConfig | None:
    """CORS for the storefront origins (none configured: no CORS headers, so browsers keep other sites out).
    Keys travel in headers, never cookies, so credentials stay off."""
    security = config.security
    if not security.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(security.cors_origins), allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "X-Api-Key", "Content-Type"], expose_headers=["Retry-After"],
        allow_credentials=False, max_age=security.cors_max_age_seconds,
    )
