"""Keys and scopes: the one place where a request's key becomes a scope, and the guard every route runs.

Three scopes, each including the one below (Algolia's search-only and admin keys, Gorse's api/admin keys):
`public` (what a browser may call), `server` (the shop's backend), `admin` (the operator). Routes name the
least scope they need with `opt=needs(Scope.X)` on their controller or handler; a route that names none needs
admin (fail closed). Health probes and the API docs are `Scope.OPEN`.

A key travels as `Authorization: Bearer KEY`, `X-Api-Key: KEY` or `X-Admin-Key: KEY` (or as the password of
`Authorization: Basic`, what a browser's login dialog sends for the dashboard), and is compared in
constant time against every configured key. Without public or server keys the appliance is in loopback mode:
anonymous requests get the server scope but only from a loopback address, and `check_exposure` refuses to
serve on another interface. Admin routes always need an admin key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
from enum import IntEnum
from typing import Any, NamedTuple

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme

from appliance.config import Config
from appliance.config_sections import SecurityConfig
from appliance.errors import InvalidInput
from web.limits import RateLimiter


class Scope(IntEnum):
    OPEN = 0  # no key: health probes, the API docs
    PUBLIC = 1  # a browser: feeds, similar products, product pages, its own events
    SERVER = 2  # the shop's backend: catalog writes, erasure, merge, operational reads; and public
    ADMIN = 3  # the operator: jobs, dead letters, redrive; and server


SCOPE_OPT = "scope"
BASIC_OPT = "basic"  # pages a person opens in a browser: a 401 asks for the key with HTTP Basic (any user name)


def needs(scope: Scope) -> dict[str, Scope]:
    """The `opt` of a controller or handler: the least scope that may call it."""
    return {SCOPE_OPT: scope}


def required_scope(handler: BaseRouteHandler) -> Scope:
    return handler.opt.get(SCOPE_OPT, Scope.ADMIN)


class Actor(NamedTuple):
    """Who sent a request: the scope it holds, its key's fingerprint (never the key) and its address."""

    scope: Scope
    key_id: str | None
    address: str

    @property
    def bucket(self) -> tuple[str, ...]:
        """Whose rate limit it spends: a public key's per client address (one key serves every browser of a
        storefront), a server or admin key's own, an anonymous client's address."""
        if self.key_id is None:
            return ("address", self.address)
        return (self.key_id, self.address) if self.scope is Scope.PUBLIC else (self.key_id,)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def _local(address: str) -> bool:
    """A loopback client, or one that is no IP address at all (a unix socket, an in-process transport)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Access:
    """The keyring and the rate limiter of one app (on `app.state.access`)."""

    def __init__(self, security: SecurityConfig, admin_key: str = "") -> None:
        admin = security.admin_keys + ((admin_key,) if admin_key else ())
        self._keys = [
            (_digest(key), scope)
            for keys, scope in ((security.public_keys, Scope.PUBLIC), (security.server_keys, Scope.SERVER),
                                (admin, Scope.ADMIN))
            for key in keys
        ]
        self.keyed = security.keyed
        self.has_admin = bool(admin)
        # anonymous requests: nothing but OPEN routes once keys exist; the server scope in loopback mode
        self.anonymous = Scope.OPEN if self.keyed else Scope.SERVER
        names = {Scope.OPEN: "anonymous", Scope.PUBLIC: "public", Scope.SERVER: "server", Scope.ADMIN: "admin"}
        rates = {s: (getattr(security, f"{n}_rate"), getattr(security, f"{n}_burst")) for s, n in names.items()}
        self.limiter = RateLimiter(rates)  # keyed by the actor's scope (OPEN: anonymous in keyed mode)

    def scope_of(self, digest: bytes) -> Scope | None:
        """The scope of a key (by its digest), None for an unknown one; compares against every key, with no
        early exit."""
        found = None
        for known, scope in self._keys:
            if hmac.compare_digest(known, digest):
                found = scope
        return found

    def actor(self, connection: ASGIConnection, read_key: bool = True, basic: bool = False) -> Actor:
        """The request's actor, its rate-limit token taken (429 when none is left); an unknown key spends
        its address's token, then gets 401."""
        address = connection.client.host if connection.client else ""
        key = _presented_key(connection) if read_key else None
        digest = None if key is None else _digest(key)
        scope = None if digest is None else self.scope_of(digest)
        if digest is None or scope is None:
            actor = Actor(self.anonymous, None, address)
        else:
            actor = Actor(scope, digest.hex()[:12], address)
        self.limiter.take(actor.bucket, actor.scope)
        if key is not None and scope is None:
            raise _unauthorized("the key sent is not a configured key", basic)
        return actor


def _presented_key(connection: ASGIConnection) -> str | None:
    headers = connection.headers
    bearer = headers.get("authorization", "")
    if bearer[:7].lower() == "bearer ":
        return bearer[7:].strip()
    if bearer[:6].lower() == "basic ":  # a browser's login dialog: the key is the password
        try:
            return base64.b64decode(bearer[6:].strip(), validate=True).decode().partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return headers.get("x-api-key") or headers.get("x-admin-key") or None


def _unauthorized(detail: str, basic: bool = False) -> NotAuthorizedException:
    challenge = 'Basic realm="appliance", charset="UTF-8"' if basic else 'Bearer realm="appliance"'
    return NotAuthorizedException(detail, headers={"WWW-Authenticate": challenge})


async def authorize(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The app's guard (async: it runs on the event loop): resolve the actor, take a token of its rate
    limit (429 when empty), then check the scope the route needs (401 without a key, 403 with a weaker one)."""
    access: Access = connection.app.state.access
    needed = required_scope(handler)
    if connection.scope.get("method") == "OPTIONS":  # Litestar's own answer: the allowed methods, nothing else
        needed = Scope.OPEN
    basic = bool(handler.opt.get(BASIC_OPT))
    actor = access.actor(connection, read_key=needed is not Scope.OPEN, basic=basic)
    if needed is Scope.OPEN:
        return
    if actor.key_id is None and not access.keyed and not _local(actor.address):
        raise PermissionDeniedException(
            "no public or server key is configured, so the appliance answers only on loopback: "
            "add security.server_keys (and security.public_keys for browsers)")
    if needed is Scope.ADMIN and not access.has_admin:
        raise PermissionDeniedException("admin endpoints are disabled: add a key to security.admin_keys "
                                        "(or server.admin_key) to use them")
    if actor.scope < needed:
        if actor.key_id is None:
            raise _unauthorized(f"this endpoint needs the {needed.name.lower()} scope: send a key of it "
                                "(Authorization: Bearer KEY)", basic)
        raise PermissionDeniedException(f"this endpoint needs the {needed.name.lower()} scope; "
                                        f"the key sent has the {actor.scope.name.lower()} scope")


def check_exposure(config: Config) -> None:
    """Fail closed: refuse to serve beyond loopback while no public or server key is configured."""
    host = config.server.host
    if not config.security.keyed and not is_loopback(host):
        raise InvalidInput(
            f"server.host {host!r} is not a loopback address and no key is configured: add security.server_keys "
            "(and security.public_keys for browsers; see README 'Keys and exposure'), or serve on 127.0.0.1",
            field="security.server_keys")


def security_schemes() -> dict[str, Any]:
    """The OpenAPI security schemes (the scopes an operation needs are listed as roles of each)."""
    return {
        "bearer": SecurityScheme(type="http", scheme="bearer", description="Authorization: Bearer KEY"),
        "apiKey": SecurityScheme(type="apiKey", name="X-Api-Key", security_scheme_in="header",
                                 description="the same key in X-Api-Key (X-Admin-Key also works)"),
    }
