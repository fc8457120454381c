"""Shared pieces of the benchmarks: machine facts, percentiles, tables, result files, a served app in a subprocess."""

from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

DEFAULT_OUT = Path("bench/results")
REPO = Path(__file__).resolve().parents[2]


def parse_size(text: str) -> int:
    """'10k' -> 10000, '1M' -> 1000000, '500' -> 500."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def parse_sizes(text: str) -> list[int]:
    return [parse_size(t) for t in text.split(",") if t.strip()]


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "hnswlib": _version("hnswlib"),
        "duckdb": _version("duckdb"),
        "numpy": _version("numpy"),
        "litestar": _version("litestar"),
        "uvicorn": _version("uvicorn"),
        "sentence_transformers": _version("sentence-transformers"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def command_of(name: str, args: Any) -> str:
    """The `appliance bench NAME ...` command line equivalent to parsed arguments (`args.positionals` names the
    arguments given bare, in order, after NAME)."""
    positionals = getattr(args, "positionals", ())
    parts = ["appliance", "bench", name, *(str(getattr(args, key)) for key in positionals)]
    for key, value in sorted(vars(args).items()):
        if key in ("run", "bench", "positionals", *positionals) or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def percentiles(samples_ms: Iterable[float]) -> dict[str, float]:
    """count, p50, p90, p99, max and mean of latencies in milliseconds (nearest-rank on sorted samples)."""
    values = np.sort(np.asarray(list(samples_ms), dtype=np.float64))
    if not len(values):
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}

    def rank(q: float) -> float:
        return float(values[min(len(values) - 1, max(0, int(np.ceil(q * len(values))) - 1))])

    return {"count": int(len(values)), "p50": round(rank(0.50), 3), "p90": round(rank(0.90), 3),
            "p99": round(rank(0.99), 3), "max": round(float(values[-1]), 3), "mean": round(float(values.mean()), 3)}


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def verdict(name: str, value: float, target: float, higher_is_better: bool, unit: str) -> str:
    """One line saying whether a target is met, and by how much it is missed."""
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    if met:
        return f"  TARGET MET    {name}: {value:,.2f} {unit} (target {sign} {target:,} {unit})"
    if higher_is_better:
        gap = f"{target - value:,.2f} {unit} short, {value / target:.0%} of target" if target else ""
    else:
        gap = f"{value - target:,.2f} {unit} over, {value / target:.1f}x the target" if target else ""
    return f"  TARGET MISSED {name}: {value:,.2f} {unit} (target {sign} {target:,} {unit}; {gap})"


def add_load_arguments(p: Any, customers: str, events: str, duration: float, max_requests: int) -> None:
    """Options every HTTP load benchmark shares: the shop it builds and how long each measured run lasts."""
    p.add_argument("--customers", default=customers, help=f"customers with a user vector (default {customers})")
    p.add_argument("--events", default=events, help=f"events in the shop, over the last 7 days (default {events})")
    p.add_argument("--duration", type=float, default=duration, help=f"seconds per run (default {duration:g})")
    p.add_argument("--max-requests", type=int, default=max_requests, help="requests per run at most")


def write_result(name: str, args: Any, data: dict[str, Any]) -> Path:
    """Write `OUT/NAME.json` atomically: the benchmark's name, the command that reproduces it (`args.bench` is
    the sub-command, set by add_bench_parser), the machine's facts (versions, date) and `data`."""
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    body = {"benchmark": name, "command": command_of(args.bench, args), "machine": machine_facts(), **data}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=1, default=str))
    os.replace(tmp, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Server:
    """`python -m web.cli serve` on 127.0.0.1 as a subprocess; started and stopped by its own pid only."""

    def __init__(self, data_dir: Path, log_path: Path | None = None, env: dict[str, str] | None = None,
                 command: Sequence[str] = ("web.cli",)) -> None:
        self.data_dir = Path(data_dir)
        self.command = list(command)  # python -m COMMAND serve ... (web.bench.loop_probe OUT wraps web.cli)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or self.data_dir / "server.log"
        self.env = {**os.environ, "APPLIANCE_SERVER__LOAD_DEMO": "false", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.started_s = 0.0

    def start(self, timeout: float = 900.0) -> Server:
        return self.launch().wait_ready(timeout)

    def launch(self) -> Server:
        cmd = [sys.executable, "-m", *self.command, "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
               "--port", str(self.port)]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.launched_at = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 900.0) -> Server:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, body = http_json("GET", f"{self.base}/health/ready", timeout=5)
                if status == 200:
                    self.started_s = time.perf_counter() - self.launched_at
                    return self
                if body and body.get("status") == "failed":
                    raise RuntimeError(f"server start-up failed: {body.get('detail')}")
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the server was not ready within {timeout} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mib(self, field: str = "VmRSS") -> float:
        """VmRSS (or another /proc/<pid>/status size, e.g. VmHWM: the kernel's peak RSS) of the server process."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self, names: Iterable[str]) -> dict[str, float]:
        """The server's /metrics samples of these names, each summed over its labels (0 when absent)."""
        wanted = set(names)
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=30) as answer:
            text = answer.read().decode()
        out = dict.fromkeys(wanted, 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    out[sample.name] += sample.value
        return out

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        self.proc = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def work_dir(arg: str | None) -> Path:
    """The folder that holds generated data dirs: the one asked for (kept, reused), or a new temp dir."""
    if arg:
        path = Path(arg)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="appliance-bench-"))


def run_loadgen(spec: dict[str, Any], spec_dir: Path) -> dict[str, Any]:
    """Run the load generator in its own process (python -m web.bench.loadgen SPEC.json); its JSON result."""
    spec_path = Path(spec_dir) / f"loadgen-{os.getpid()}-{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps(spec))
    limit = float(spec.get("duration", 10)) + 120.0
    done = subprocess.run([sys.executable, "-m", "web.bench.loadgen", str(spec_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=limit, check=False)
    spec_path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)
