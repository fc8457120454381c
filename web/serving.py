"""`appliance serve`: uvicorn with the slow-client limits of [security].

uvicorn closes idle keep-alive connections (`keep_alive_seconds`) and caps concurrent connections
(`max_connections`, then 503), but has no time-out for a request's head: a client that connects and sends
its headers a byte at a time holds a connection for ever. `HeadTimeoutProtocol` closes a connection whose
request line and headers have not arrived `header_timeout_seconds` after it opened (or after the first byte
of a later request on it). The body has its own time-out, web/limits.py's BodyTimeout (408).

uvicorn writes a response's head and its body with two `transport.write` calls, two sends on the socket; on
loopback each send runs the receiver's TCP processing and wake-up inside the sender's system call (the head's
send was 40 % of the event loop's samples under wrk). `_OneSend` holds the head until the body follows in the
same turn of the loop and sends both at once (a head alone, e.g. for HEAD, goes out at the end of the turn).
"""

from __future__ import annotations

import asyncio

from appliance.config import Config


class _OneSend:
    """The transport as one response's writer sees it: its first write (the head) is held and sent with the next
    one, or at the end of this turn of the loop when none follows; everything else goes to the transport."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = b""  # b"": nothing written yet; None: the head has gone out

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._transport.write(data)
        elif held:
            self._held = None
            self._transport.write(held + data)
        else:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def serve(config: Config) -> None:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from web.app import create_app

    app = create_app(config)  # refuses a non-loopback host without keys, before binding anything
    security = config.security

    class HeadTimeoutProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(security.header_timeout_seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _too_slow(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            before = self.cycle
            super().on_headers_complete()
            if self.cycle is not before:  # a new request's cycle (not an upgrade, which makes none)
                self.cycle.transport = _OneSend(self.transport, self.loop)  # type: ignore[assignment]

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    # uvicorn logs through the one handler web.telemetry.configure_logging set (log_config=None); its access log
    # is replaced by web.telemetry's line per request (route template, status, duration, recommendation id)
    uvicorn.run(
        app, host=config.server.host, port=config.server.port, log_config=None, access_log=False,
        http=HeadTimeoutProtocol,
        timeout_keep_alive=security.keep_alive_seconds, limit_concurrency=security.max_connections or None,
    )
