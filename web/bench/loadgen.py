"""A small closed-loop HTTP/1.1 load generator, run in its own process: `python -m web.bench.loadgen SPEC.json`.

Keep-alive connections on raw asyncio streams (far cheaper per request than an HTTP client library, which
matters when client and server share 2 cores). Closed loop (the default): each of `concurrency` connections
sends one request, waits for the whole answer, then sends the next. Open loop (`rate` set): request i is due at
start + i / rate whatever happened before, goes out on an idle connection (a new one when none is idle), and its
latency counts from when it was due, so queueing in the server is not hidden. Bounded by `duration` seconds and
`max_requests`; SIGTERM ends a run early and still prints its figures. Only 127.0.0.1.

SPEC: {"port": P, "duration": s, "max_requests": n, "concurrency": c, "warmup": n, "rate": null | req/s,
       "requests": [{"method": "GET", "path": "/x", "body": null | "json text", "tag": "name",
                     "headers": {"Authorization": "Bearer KEY"} (optional)}, ...],
       "count_substring": "\\"personalized\\":true"}
Prints JSON: per tag the latencies (ms), statuses, errors and substring hits; wall seconds; client CPU seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

HOST = "127.0.0.1"


def _encode(port: int, request: dict[str, Any]) -> bytes:
    body = (request.get("body") or "").encode()
    head = f"{request.get('method', 'GET')} {request['path']} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (request.get("headers") or {}).items())
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length) if length else b""
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return status, b"".join(parts)
        parts.append(data[:-2])


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: bytes) -> tuple[int, bytes] | None:
    """One request on a keep-alive connection: (status, body), or None when the connection failed (closed)."""
    try:
        writer.write(wire)
        await writer.drain()
        return await _read_response(reader)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        writer.close()
        return None


class _Stats:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {}
        self.statuses: dict[str, dict[str, int]] = {}
        self.errors: dict[str, int] = {}
        self.hits: dict[str, int] = {}

    def record(self, tag: str, ms: float, status: int, body: bytes, substring: bytes | None) -> None:
        self.latencies.setdefault(tag, []).append(ms)
        by_status = self.statuses.setdefault(tag, {})
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        if substring is not None and substring in body:
            self.hits[tag] = self.hits.get(tag, 0) + 1


async def _worker(spec: dict[str, Any], wires: list[tuple[str, bytes]], start: int, stats: _Stats,
                  budget: list[int], deadline: float, record: bool, substring: bytes | None) -> None:
    reader, writer = await asyncio.open_connection(HOST, spec["port"])
    i = start
    step = max(1, int(spec.get("concurrency", 1)))
    try:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            tag, wire = wires[i % len(wires)]
            i += step
            t0 = time.perf_counter()
            if (answer := await _send(reader, writer, wire)) is None:
                stats.errors[tag] = stats.errors.get(tag, 0) + 1
                reader, writer = await asyncio.open_connection(HOST, spec["port"])
                continue
            status, body = answer
            if record:
                stats.record(tag, (time.perf_counter() - t0) * 1000.0, status, body, substring)
    finally:
        writer.close()


async def _phase(spec: dict[str, Any], wires: list[tuple[str, bytes]], stats: _Stats, count: int, seconds: float,
                 record: bool, stop: asyncio.Event | None = None) -> float:
    substring = spec.get("count_substring")
    budget = [count]
    t0 = time.perf_counter()
    deadline = time.monotonic() + seconds
    workers = asyncio.gather(*(
        _worker(spec, wires, w, stats, budget, deadline, record, substring.encode() if substring else None)
        for w in range(max(1, int(spec.get("concurrency", 1))))
    ))
    if stop is not None:
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([workers, stopped], return_when=asyncio.FIRST_COMPLETED)
        budget[0] = 0  # the workers finish the request in hand
        stopped.cancel()
    await workers
    return time.perf_counter() - t0


async def _open_loop(spec: dict[str, Any], wires: list[tuple[str, bytes]], stats: _Stats, stop: asyncio.Event) -> float:
    """Requests due at a fixed rate; each latency counts from the moment the request was due. At most
    `max_connections` are open; a request due while all are busy waits for one (its wait is counted)."""
    rate, port = float(spec["rate"]), spec["port"]
    substring = spec.get("count_substring", "").encode() or None
    n = min(int(float(spec["duration"]) * rate), int(spec.get("max_requests", 1_000_000)))
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened: list[asyncio.StreamWriter] = []
    limit = int(spec.get("max_connections", 256))

    async def one(i: int, due: float) -> None:
        tag, wire = wires[i % len(wires)]
        if idle.empty() and len(opened) < limit:
            conn = await asyncio.open_connection(HOST, port)
            opened.append(conn[1])
        else:
            conn = await idle.get()
        if (answer := await _send(*conn, wire)) is None:
            stats.errors[tag] = stats.errors.get(tag, 0) + 1
            conn = await asyncio.open_connection(HOST, port)
            opened.append(conn[1])
            idle.put_nowait(conn)
            return
        stats.record(tag, (time.perf_counter() - due) * 1000.0, *answer, substring)
        idle.put_nowait(conn)

    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        if stop.is_set():
            break
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))  # also lets SIGTERM in when behind
        tasks.append(asyncio.create_task(one(i, due)))
    if tasks:  # once stopped (SIGTERM), requests still unanswered after 10 s are dropped and counted
        _, late = await asyncio.wait(tasks, timeout=10.0 if stop.is_set() else None)
        for task in late:
            task.cancel()
        if late:
            stats.errors["unanswered"] = len(late)
    wall = time.perf_counter() - t0
    for writer in opened:
        writer.close()
    return wall


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    wires = [(r.get("tag", "all"), _encode(spec["port"], r)) for r in spec["requests"]]
    stats = _Stats()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    warmup = int(spec.get("warmup", 0))
    if warmup:
        await _phase(spec, wires, _Stats(), warmup, float(spec.get("warmup_seconds", 60.0)), record=False)
    cpu0 = os.times()
    if spec.get("rate"):
        wall = await _open_loop(spec, wires, stats, stop)
    else:
        wall = await _phase(spec, wires, stats, int(spec.get("max_requests", 1_000_000)), float(spec["duration"]),
                            True, stop)
    cpu1 = os.times()
    tags = sorted(set(stats.latencies) | set(stats.errors))
    return {
        "wall_seconds": wall,
        "client_cpu_seconds": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "concurrency": int(spec.get("concurrency", 1)),
        "tags": {t: {"latencies_ms": stats.latencies.get(t, []), "statuses": stats.statuses.get(t, {}),
                     "errors": stats.errors.get(t, 0), "substring_hits": stats.hits.get(t, 0)} for t in tags},
    }


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    result = asyncio.run(run(spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
