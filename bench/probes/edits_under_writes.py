"""Probe driver (BENCHMARKS.md "Tenth round"): product edits under `bench serve`'s write streams, window by window,
with the server under `bench.probes.write_lock` (the writer lock's holders, the edit's stages, an object census).

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/probes/edits_under_writes.py SHOP OUT.json [SECONDS] [WINDOWS]
SHOP: a built `bench serve` shop (copied first, the copy served); WINDOWS: comma-separated names of `PLANS` (default
all). Each window: events at 500/s (POST /events of 5) and/or 10 PUT /products/{id}/s (open loop, latency from the due
time; every edit a real change: a product not edited before, price + 1 cent and stock flipped), and/or `wrk` on
the personal feed. Prints per window the edits' and events' latency, the feed's req/s and p99, the server's CPU, the
lock's holders and the edit's stages; writes every window's figures to OUT.json.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from web.bench.common import REPO, Server, percentiles
from web.bench.serve import _edits, _events, _script, _wait_for_start_up, closed_loop
from web.bench.synth import fresh_copy

# name -> (events on, edits on, wrk connections on the personal feed or 0)
PLANS = {"edits": (False, True, 0), "events": (True, False, 0), "writes": (True, True, 0),
         "feed8": (True, False, 8), "feed8+edits": (True, True, 8), "feed32": (True, False, 32),
         "feed32+edits": (True, True, 32)}


def stream(server: Server, root: Path, name: str, rate: float, seconds: float,
           requests: list[dict]) -> subprocess.Popen:
    spec = root / f"probe-{name}.json"
    spec.write_text(json.dumps({"port": server.port, "rate": rate, "duration": seconds, "requests": requests}))
    return subprocess.Popen([sys.executable, "-m", "web.bench.loadgen", str(spec)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen | None, tag: str) -> dict | None:
    if proc is None:
        return None
    out, err = proc.communicate(timeout=600)
    got = json.loads(out)["tags"].get(tag, {})
    return {"statuses": got.get("statuses"), "errors": got.get("errors"),
            "latency_ms": percentiles(got.get("latencies_ms", []))}


def main(argv: list[str]) -> int:
    shop, out = Path(argv[0]), Path(argv[1])
    seconds = float(argv[2]) if len(argv) > 2 else 20.0
    plans = argv[3].split(",") if len(argv) > 3 else list(PLANS)
    info = json.loads((shop / "shop.json").read_text())
    products, customers = info["products"], info["customers"]
    path = fresh_copy(shop)
    root = out.parent
    probe_out = root / f"{out.stem}-lock.json"
    for old in root.glob(f"{out.stem}-lock-*.json"):
        old.unlink()
    log = path / "server.log"
    offset = log.stat().st_size if log.exists() else 0
    rng = np.random.default_rng(11)
    windows = []
    with Server(path, log, command=["bench.probes.write_lock", str(probe_out)]) as server:
        _wait_for_start_up(log, offset)
        feed = _script(root, "personal", customers, 20)
        closed_loop(server, feed, 8, 5.0)  # warm-up
        edits = _edits(server, products, rng, n=int(seconds * 10 * len(plans)) + 10)  # each edit a real change
        for n, name in enumerate(plans, 1):
            with_events, with_edits, conns = PLANS[name]
            server.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.2)
            cpu0 = server.cpu_seconds()
            ev = stream(server, root, "events", 100.0, seconds,
                        _events(products, customers, 5, rng)) if with_events else None
            ed = stream(server, root, "edits", 10.0, seconds, edits[:int(seconds * 10)]) if with_edits else None
            if with_edits:
                edits = edits[int(seconds * 10):]
            feed_row = closed_loop(server, feed, conns, seconds) if conns else None
            if not conns:
                time.sleep(seconds)
            row = {"window": name, "feed": feed_row, "edits": finished(ed, "edit"), "events": finished(ev, "events")}
            row["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
            server.proc.send_signal(signal.SIGUSR2)
            probe = probe_out.with_name(f"{probe_out.stem}-{n}.json")
            deadline = time.monotonic() + 60
            while not probe.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            row["probe"] = json.loads(probe.read_text())
            windows.append(row)
            show(row)
            out.write_text(json.dumps(windows, indent=1))
    return 0


def show(row: dict) -> None:
    def lat(part: dict | None) -> str:
        return "-" if part is None else (f"p50 {part['latency_ms']['p50']:.0f} p99 {part['latency_ms']['p99']:.0f} "
                                         f"max {part['latency_ms']['max']:.0f} ms {part['statuses']}")
    feed = row["feed"]
    served = "-" if feed is None else f"{feed['rps']} req/s p99 {feed['latency_ms']['p99']} ms"
    print(f"== {row['window']}: server CPU {row['server_cpu_s']} s; edits {lat(row['edits'])}; events "
          f"{lat(row['events'])}; feed {served}", flush=True)
    probe = row["probe"]
    print(f"   lock held {probe['lock_held_share']:.0%} of the window; census {probe['census']}")
    for e in probe["lock"][:8]:
        print(f"   lock {e['label']:60s} n={e['count']:5d} wait p50/p99/max {e['wait_ms']['p50']}/{e['wait_ms']['p99']}"
              f"/{e['wait_ms']['max']} hold sum {e['hold_ms']['sum']} p50/p99/max {e['hold_ms']['p50']}/"
              f"{e['hold_ms']['p99']}/{e['hold_ms']['max']} cpu sum {e['hold_cpu_ms']['sum']}")
    for e in probe["pool"][:4]:
        print(f"   pool {e['label']:40s} n={e['count']:5d} wait p50/p99 {e['wait_ms']['p50']}/{e['wait_ms']['p99']}"
              f" run p50/p99 {e['run_ms']['p50']}/{e['run_ms']['p99']}")
    for e in probe["edit_stages"]:
        print(f"   edit {e['label']:40s} n={e['count']:5d} wall p50/p99 {e['wall_ms']['p50']}/{e['wall_ms']['p99']}"
              f" sum {e['wall_ms']['sum']} cpu sum {e['cpu_ms']['sum']}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
