"""Decoding a request body before the handler's parameters are parsed, so that a body which is not UTF-8 or is
nested too deeply is a 400 naming the body (`$`), not the 500 that msgspec's UnicodeDecodeError or RecursionError
would become. The decoded value is cached on the request, so the body is decoded once."""

from __future__ import annotations

from litestar import Request
from litestar.exceptions import SerializationException

from appliance.errors import InvalidInput

WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class MalformedBody(InvalidInput):
    """A body that cannot be read as JSON at all (web/errors.py answers 400)."""


async def decode_json_body(request: Request) -> None:
    """Litestar before_request hook: decode a JSON body once, refusing what cannot be decoded."""
    if request.method not in WITH_BODY or not await request.body():
        return
    try:
        await request.json()
    except UnicodeDecodeError:
        raise MalformedBody("the body is not UTF-8 encoded JSON", field="$") from None
    except RecursionError:
        raise MalformedBody("the body is nested too deeply", field="$") from None
    except SerializationException as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}", field="$") from None
