"""Limits: token-bucket rate limits (one process, so in memory) and the slow-client body time-out.

The body size cap is Litestar's `request_max_body_size` (413) and the batch caps are checked by the
handlers (and written into the OpenAPI schema by web/docs.py); uvicorn's keep-alive time-out and connection
cap are set by `appliance serve`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping

import anyio
from litestar.exceptions import HTTPException, TooManyRequestsException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

MAX_BUCKETS = 100_000  # clients remembered at once; the least recently seen is forgotten (its bucket refills)


class RateLimiter:
    """One token bucket per client: `rate` tokens a second up to `burst`; a request takes one.

    `rates` maps a rate class (the actor's scope) to (rate, burst); a rate of 0 means no limit. Called on
    the event loop only (the guard is async), so it needs no lock.
    """

    def __init__(self, rates: Mapping[Hashable, tuple[float, int]], clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.rates = dict(rates)
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # (tokens, at)

    def take(self, bucket: Hashable, rate_class: Hashable) -> None:
        """Spend one token of `bucket`; TooManyRequestsException (429, Retry-After) when it has none."""
        rate, burst = self.rates[rate_class]
        if rate <= 0:
            return
        now = self.clock()
        key = (rate_class, bucket)
        tokens, at = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / rate)
            raise TooManyRequestsException(
                f"rate limit: {rate:g} requests per second (bursts of {burst}); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)


class BodyTimeout:
    """ASGI middleware: a request body that has not arrived in full `seconds` after the request began gets
    408 and the connection is closed (a client that announces 100 bytes and sends 10 holds nothing for long)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    status_code=408, detail=f"the request body did not arrive within {self.seconds:g} s",
                    headers={"Connection": "close"},
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


def body_timeout(seconds: float) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware factory for Litestar's `middleware=[...]`."""
    return lambda app: BodyTimeout(app, seconds)
