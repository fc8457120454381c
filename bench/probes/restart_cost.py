"""Probe (BENCHMARKS.md "Feed under load", twelfth round): what a restart of `tests/test_crash.py`'s server costs.
Starts the test's demo server on DATA_DIR, waits for /health/ready, sends 60 events, kills it (SIGKILL), starts it
again and waits for /health/ready; prints each start's wall seconds and the server's CPU seconds (/proc), and leaves
each start's log beside DATA_DIR (DATA_DIR.first.log, DATA_DIR.restart.log).
Run: .venv/bin/python bench/probes/restart_cost.py /tmp/somewhere/data"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

data = sys.argv[1]
env = {**os.environ, "HF_HUB_OFFLINE": "1", "APPLIANCE_DEMO__PRODUCTS": "60", "APPLIANCE_DEMO__CUSTOMERS": "3",
       "APPLIANCE_DEMO__DAYS": "1", "APPLIANCE_DEMO__TRAIN": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


for name in ("first", "restart"):
    port = free_port()
    with open(f"{data}.{name}.log", "w") as log:
        t0, used = time.monotonic(), 0.0
        server = subprocess.Popen([sys.executable, "-m", "web.cli", "serve", "--port", str(port), "--data-dir", data],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                used = cpu(server.pid)
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.1)
        print(f"{name}: ready after {time.monotonic() - t0:.1f} s wall, {used:.2f} CPU s of the server; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        if name == "first":
            for i in range(60):
                httpx.post(f"http://127.0.0.1:{port}/events",
                           json=[{"customer_id": 7000 + i % 20, "product_id": 1 + i, "event_name": "product_clicked"}])
        server.send_signal(signal.SIGKILL if name == "first" else signal.SIGTERM)
        server.wait(30)
