"""What blocks the event loop: `python -m web.bench.loop_probe OUT.json serve --data-dir D ...` (bench only).

Runs `appliance serve` with its arguments on asyncio's own loop (uvloop's handles cannot be wrapped; the work
a callback does is the same) and records, until the server stops:
- every loop callback's **thread CPU time** (`time.thread_time`, so other processes on a shared machine do not
  count) and wall time; a callback above `BLOCK_MS` of CPU is a block, kept with its cause;
- the cause: a watchdog thread samples the loop thread's stack while a callback has run > 1 ms; the block is
  charged to the innermost frame of this project's code (else the innermost frame), or to the collector when a
  cyclic-GC pass ran inside it;
- every GC pass in every thread (`gc.callbacks`): generation, thread, CPU and wall ms;
- the CPU of every thread at the end (`/proc/self/task`), by thread name.
SIGUSR1 starts a window (clears what was recorded), SIGUSR2 ends it: OUT-<n>.json gets the n-th window's summary.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

BLOCK_MS = 2.0  # a callback that held the loop for this much CPU is a block
SAMPLE_AFTER_S = 0.001  # the watchdog samples a callback's stack once it has run this long (wall)
OURS = tuple(f"{os.sep}{p}{os.sep}" for p in ("appliance", "jobs", "storage", "web"))


class Probe:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.loop_thread: int | None = None
        self.current: tuple[float, int] | None = None  # (wall start, callback serial) of the running callback
        self.serial = 0
        self.skip = -1
        self.sampled: dict[int, list[str]] = {}  # callback serial -> sampled causes
        self.gc_in_loop = 0.0  # CPU ms of GC passes inside the running loop callback
        self.callbacks = 0
        self.callback_cpu = 0.0
        self.waits = 0  # callbacks whose wall time exceeded their CPU by >= 10 ms
        self.blocks: list[dict[str, Any]] = []
        self.gcs: list[dict[str, Any]] = []
        self._gc_start: dict[int, tuple[float, float]] = {}

    def reset(self) -> None:
        self.skip = self.serial  # the callback this signal interrupted: its CPU includes this reset
        self.started, self.callbacks, self.callback_cpu = time.monotonic(), 0, 0.0
        self.blocks, self.gcs, self.waits = [], [], 0
        self.cpu_at_start = thread_cpu()

    def wrap(self) -> None:
        run = asyncio.events.Handle._run
        probe = self

        def _run(handle: asyncio.Handle) -> None:
            probe.loop_thread = threading.get_ident()
            probe.serial += 1
            serial, wall0, cpu0 = probe.serial, time.perf_counter(), time.thread_time()
            probe.current, probe.gc_in_loop = (wall0, serial), 0.0
            try:
                run(handle)
            finally:
                cpu = 1000 * (time.thread_time() - cpu0)
                probe.current = None
                probe.callbacks += 1
                probe.callback_cpu += cpu
                causes = probe.sampled.pop(serial, None)
                wall = 1000 * (time.perf_counter() - wall0)
                probe.waits += wall - cpu >= 10  # held up 10 ms beyond its own CPU: the GIL or a core
                if cpu >= BLOCK_MS and serial != probe.skip:
                    probe.block(handle, cpu, wall, causes)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)
        threading.Thread(target=self._watch, name="loop-probe", daemon=True).start()

    def block(self, handle: asyncio.Handle, cpu: float, wall: float, causes: list[str] | None) -> None:
        if self.gc_in_loop >= cpu / 2:
            cause = "gc"
        elif causes:
            cause = collections.Counter(causes).most_common(1)[0][0]
        else:
            cause = f"callback {_callback_name(handle)}"
        self.blocks.append({"t": round(time.monotonic() - self.started, 3), "cpu_ms": round(cpu, 2),
                            "wall_ms": round(wall, 2), "gc_ms": round(self.gc_in_loop, 2), "cause": cause,
                            "callback": _callback_name(handle)})

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        me = threading.get_ident()
        if phase == "start":
            self._gc_start[me] = (time.thread_time(), time.perf_counter())
            return
        cpu0, wall0 = self._gc_start.pop(me, (time.thread_time(), time.perf_counter()))
        cpu = 1000 * (time.thread_time() - cpu0)
        if me == self.loop_thread and self.current is not None:
            self.gc_in_loop += cpu
        self.gcs.append({"t": round(time.monotonic() - self.started, 3), "generation": info["generation"],
                         "thread": threading.current_thread().name, "cpu_ms": round(cpu, 3),
                         "wall_ms": round(1000 * (time.perf_counter() - wall0), 3), "collected": info["collected"]})

    def _watch(self) -> None:
        while True:
            time.sleep(SAMPLE_AFTER_S / 2)
            current, tid = self.current, self.loop_thread
            if current is None or tid is None or time.perf_counter() - current[0] < SAMPLE_AFTER_S:
                continue
            frame = sys._current_frames().get(tid)
            if frame is not None and self.current == current:
                self.sampled.setdefault(current[1], []).append(_cause(frame))

    def summarize(self, seconds: float) -> dict[str, Any]:
        per10 = 10.0 / max(seconds, 1e-9)
        causes: dict[str, dict[str, float]] = {}
        for b in self.blocks:
            c = causes.setdefault(b["cause"], {"blocks": 0, "over_10ms": 0, "cpu_ms": 0.0, "max_cpu_ms": 0.0})
            c["blocks"] += 1
            c["over_10ms"] += b["cpu_ms"] >= 10
            c["cpu_ms"] += b["cpu_ms"]
            c["max_cpu_ms"] = max(c["max_cpu_ms"], b["cpu_ms"])
        top = sorted(causes.items(), key=lambda kv: -kv[1]["cpu_ms"])
        gcs: dict[str, dict[str, float]] = {}
        for g in self.gcs:
            s = gcs.setdefault(f"gen{g['generation']} {g['thread']}", {"passes": 0, "cpu_ms": 0.0, "max_cpu_ms": 0.0})
            s["passes"] += 1
            s["cpu_ms"] += g["cpu_ms"]
            s["max_cpu_ms"] = max(s["max_cpu_ms"], g["cpu_ms"])
        return {
            "seconds": round(seconds, 1), "block_cpu_ms": BLOCK_MS, "callbacks": self.callbacks,
            "loop_callback_cpu_s": round(self.callback_cpu / 1000, 3),
            "blocks_per_10s": round(len(self.blocks) * per10, 1),
            "blocks_over_10ms_per_10s": round(sum(b["cpu_ms"] >= 10 for b in self.blocks) * per10, 1),
            "causes": [{"cause": k, **{n: round(v, 2) for n, v in c.items()},
                        "per_10s": round(c["blocks"] * per10, 2)} for k, c in top],
            "gc": {k: {n: round(v, 2) for n, v in s.items()} for k, s in sorted(gcs.items())},
            "waits_over_10ms_per_10s": round(self.waits * per10, 1),
            "thread_cpu_s": _minus(thread_cpu(), getattr(self, "cpu_at_start", {})), "blocks": self.blocks,
            "gc_passes_over_2ms": [g for g in self.gcs if g["cpu_ms"] >= BLOCK_MS],
        }


def _callback_name(handle: asyncio.Handle) -> str:
    cb = getattr(handle, "_callback", None)
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {getattr(coro, '__qualname__', coro)}"
    return getattr(cb, "__qualname__", repr(cb))


def _cause(frame: Any) -> str:
    """The innermost frame of this project's code on the stack (with the innermost frame when that is not it)."""
    leaf, here = frame, frame
    while here is not None:
        if any(p in here.f_code.co_filename for p in OURS) and "loop_probe" not in here.f_code.co_filename:
            where = f"{Path(here.f_code.co_filename).stem}.{here.f_code.co_qualname}"
            return where if here is leaf else f"{where} > {leaf.f_code.co_qualname}"
        here = here.f_back
    return f"{Path(leaf.f_code.co_filename).stem}.{leaf.f_code.co_qualname}"


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread name (the process's threads now; threads that ended are not listed)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = collections.defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        name = names.get(int(tid), f"native {comm}")
        out[name.split("_")[0] if name.startswith("ThreadPoolExecutor") else name] += \
            (int(fields[11]) + int(fields[12])) / tick
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def _minus(now: dict[str, float], then: dict[str, float]) -> dict[str, float]:
    return {k: round(v - then.get(k, 0.0), 2) for k, v in now.items()}


def main(argv: list[str]) -> int:
    out, rest = Path(argv[0]), argv[1:]
    probe = Probe()
    probe.wrap()
    windows = [0]

    def end_window(*_: object) -> None:
        windows[0] += 1
        summary = probe.summarize(time.monotonic() - probe.started)
        path = out.with_name(f"{out.stem}-{windows[0]}.json")
        path.with_suffix(".tmp").write_text(json.dumps(summary, indent=1))
        os.replace(path.with_suffix(".tmp"), path)  # whole: `bench loop` reads it as soon as it exists

    signal.signal(signal.SIGUSR1, lambda *_: probe.reset())
    signal.signal(signal.SIGUSR2, end_window)
    import uvicorn

    run = uvicorn.run
    uvicorn.run = lambda *a, **kw: run(*a, **{**kw, "loop": "asyncio"})  # type: ignore[assignment]
    from web.cli import main as cli

    return cli(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
