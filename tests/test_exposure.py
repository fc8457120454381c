"""`appliance serve` as a real uvicorn process on 127.0.0.1: bind refusal without keys, slow clients cut off,
and loopback mode refusing a client that a local proxy forwards from elsewhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import wait_until

SLOW_SECONDS = 1.0  # header and body time-outs of the server under test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "APPLIANCE_SERVER__LOAD_DEMO": "false",
            "APPLIANCE_JOBS__ENABLED": "false", **extra}


def test_serve_on_every_interface_without_keys_refuses_naming_the_setting(tmp_path) -> None:
    port = _free_port()
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", "serve", "--host", "0.0.0.0", "--port", str(port), "--data-dir",
         str(tmp_path / "data")], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "security.server_keys" in done.stderr and "0.0.0.0" in done.stderr
    assert not (tmp_path / "data" / "appliance.duckdb").exists()  # refused before opening anything
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[int]:
    port = _free_port()
    seconds = str(SLOW_SECONDS)
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve", "--port", str(port), "--data-dir",
         str(tmp_path_factory.mktemp("serve") / "data")],
        env=_env(APPLIANCE_SECURITY__BODY_TIMEOUT_SECONDS=seconds, APPLIANCE_SECURITY__HEADER_TIMEOUT_SECONDS=seconds),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _ready(port), timeout=120, what="server ready")
        yield port
    finally:
        process.terminate()
        process.wait(30)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket time-out: it did not close)."""
    sock.settimeout(SLOW_SECONDS * 10)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_that_does_not_arrive_gets_408_and_the_connection_closes(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n0123456789")
        answer = _read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in head.lower() and b"application/problem+json" in head
    assert b"did not arrive within" in body
    assert httpx.get(f"http://127.0.0.1:{server}/health/live").status_code == 200  # and it keeps serving


@pytest.mark.parametrize("sent", [b"", b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
def test_a_client_that_never_finishes_its_headers_is_disconnected(server: int, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(sent)
        assert _read_all(sock) == b""


def test_loopback_mode_refuses_a_client_forwarded_from_elsewhere(server: int) -> None:
    base = f"http://127.0.0.1:{server}"
    assert httpx.get(f"{base}/queue").status_code == 200
    forwarded = httpx.get(f"{base}/queue", headers={"X-Forwarded-For": "203.0.113.9"})
    assert forwarded.status_code == 403 and "security.server_keys" in forwarded.json()["detail"]
    assert httpx.get(f"{base}/health/ready", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200


def test_pipelined_requests_and_a_head_request_are_answered_whole_on_one_connection(server: int) -> None:
    """Each response leaves as one send (web/serving.py `_OneSend`): the head of a HEAD answer (no body follows)
    still leaves, and pipelined requests get their answers complete and in order."""
    get = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head = b"HEAD /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    last = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(get + head + last)
        answer = _read_all(sock)
    heads = answer.split(b"HTTP/1.1 ")[1:]
    assert len(heads) == 3, answer
    for answered in (heads[0], heads[2]):
        status, _, body = answered.partition(b"\r\n\r\n")
        assert status.startswith(b"200") and body.startswith(b'{"status":"live"') and body.endswith(b"}")
    assert heads[1].endswith(b"\r\n\r\n")  # a head and no body
