"""Probe (BENCHMARKS.md "Feed under load", eighteenth round): who holds DuckDB's writer lock, and how long, under
`bench serve`'s load: `appliance bench serve --phases writes --concurrency 8` with the server run under
`bench.probes.write_lock`, whose window opens 8 s after the write streams start and closes 30 s later (its figures
in OUT-1.json, the bench's in BENCH_OUT/serve.json). The arm is set through the environment the server inherits,
e.g. `APPLIANCE_SERVER__SWITCH_INTERVAL_MS=5` for Python's own switch interval.
Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/probes/serve_locks.py OUT.json BENCH_OUT [WORK_DIR]"""
import os
import signal
import subprocess
import sys
import threading
import time

from web.bench.common import Server
from web.cli import main

out, bench_out = sys.argv[1], sys.argv[2]
work_dir = sys.argv[3] if len(sys.argv) > 3 else "/work/shops"
plain = Server.__init__


def probed(self, data_dir, log_path=None, env=None, command=("web.cli",)):  # noqa: ANN001, ANN202
    plain(self, data_dir, log_path, env, ("bench.probes.write_lock", out))


def _pid(pattern: str) -> int | None:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def window() -> None:
    while _pid("web.bench.loadgen") is None:  # the write streams' generators
        time.sleep(1)
    time.sleep(8)
    server = _pid("bench.probes.write_lock")
    assert server is not None, "no probed server"
    os.kill(server, signal.SIGUSR1)
    time.sleep(30)
    os.kill(server, signal.SIGUSR2)


Server.__init__ = probed
threading.Thread(target=window, daemon=True).start()
sys.exit(main(["bench", "serve", "--work-dir", work_dir, "--phases", "writes", "--concurrency", "8",
               "--out", bench_out]))
