"""web/serving.py `_OneSend`: a response's head and body leave in one send on a real loopback socket, a head
without a body (HEAD) still leaves, and the server answers HEAD and pipelined requests whole."""

from __future__ import annotations

import asyncio
import socket

from web.serving import _OneSend


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)


async def _sends(steps) -> list[bytes]:
    """Run `steps(writer)` against a real transport to a loopback peer; the sends, as the peer's kernel saw
    them (each send on loopback with TCP_NODELAY is one segment, one recv here)."""
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    recorder = _Recorder()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=left)
    sent: list[bytes] = []
    real_write = transport.write

    def write(data: bytes) -> None:
        sent.append(bytes(data))
        real_write(data)

    transport.write = write  # type: ignore[method-assign]  # count the sends the transport is asked for
    peer, _ = await loop.create_connection(lambda: recorder, sock=right)
    writer = _OneSend(transport, loop)
    steps(writer)
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert b"".join(recorder.chunks) == b"".join(sent)  # nothing lost, nothing reordered
    transport.close()
    peer.close()
    return sent


def test_a_head_and_its_body_go_out_in_one_send() -> None:
    def steps(w: _OneSend) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        w.write(b"{}")

    assert asyncio.run(_sends(steps)) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_a_head_alone_goes_out_at_the_end_of_the_turn_and_later_writes_go_straight_through() -> None:
    def head_only(w: _OneSend) -> None:
        w.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    assert asyncio.run(_sends(head_only)) == [b"HTTP/1.1 204 No Content\r\n\r\n"]

    def streamed(w: _OneSend) -> None:
        w.write(b"head|")
        w.write(b"one|")
        w.write(b"two")

    assert asyncio.run(_sends(streamed)) == [b"head|one|", b"two"]


def test_close_sends_what_is_held_first() -> None:
    def steps(w: _OneSend) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
        w.close()

    assert asyncio.run(_sends(steps)) == [b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"]
