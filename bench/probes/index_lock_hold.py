"""Probe (BENCHMARKS.md "Fifth round (branch `import8`)"): how long one index sync's adds hold the product index's
lock, and how long a feed's nearest-products lookup waits meanwhile, in process (real hnswlib, no server):
`python bench/probes/index_lock_hold.py OUT.json [--existing 48000] [--adds 2048] [--index DIR]`.

An index of `existing` clustered unit vectors (built once and saved in DIR, then loaded by each run, so the code
before and after a change reads the same graph) takes `adds` new ones in one `VectorIndex.upsert` on one thread
(what `jobs.indexing.SYNC_EVERY` hands one sync during a bulk upload), while a reader thread asks `query` (k 60,
ef 60: a personal feed's first lookup) every 2 ms. The index's lock is wrapped to time each hold by the syncing
thread (wall ms from its outermost acquire to its release). Prints and writes: the sync's seconds and adds/s,
the holds (count, p50, p99, max; the five longest and their place in order), the reader's latency while idle
and during the sync (p50, p99, max, count).
Run the code before a change with `PYTHONPATH=<its checkout>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from appliance.config import load_config
from storage.vectors import VectorIndex
from web.bench.synth import centres, members

DIM = 384


class TimedLock:
    """An RLock that records how long `holder` held it, outermost acquire to release."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._since = 0.0
        self.holder: int | None = None
        self.holds: list[float] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got and threading.get_ident() == self.holder:
            self._depth += 1
            if self._depth == 1:
                self._since = time.perf_counter()
        return got

    def release(self) -> None:
        if threading.get_ident() == self.holder:
            self._depth -= 1
            if self._depth == 0:
                self.holds.append((time.perf_counter() - self._since) * 1000)
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


def _figures(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"count": 0}
    a = np.asarray(ms)
    return {"count": len(ms), "p50": round(float(np.percentile(a, 50)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}


def _index(folder: Path, existing: int, rng: np.random.Generator, centre_vectors: np.ndarray) -> VectorIndex:
    config = load_config(overrides={"server": {"load_demo": False}}).index
    index = VectorIndex(folder / f"lock-{existing}.hnsw", DIM, config)
    if index.load() is None:
        return index
    folder.mkdir(parents=True, exist_ok=True)
    index.upsert(np.arange(1, existing + 1, dtype=np.int64),
                 members(rng, centre_vectors, rng.integers(0, len(centre_vectors), existing)), threads=2)
    index.save(whole=True)
    return index


def _reader(index: VectorIndex, queries: np.ndarray, done: threading.Event, out: list[tuple[float, float]]) -> None:
    i = 0
    while not done.is_set():
        t0 = time.perf_counter()
        index.query(queries[i % len(queries)], 60, ef=60)
        out.append((t0, (time.perf_counter() - t0) * 1000))
        i += 1
        time.sleep(0.002)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--existing", type=int, default=48_000)
    parser.add_argument("--adds", type=int, default=2048)
    parser.add_argument("--index", type=Path, default=Path("/tmp/index-lock-probe"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(11)
    centre_vectors = centres(rng, max(8, args.existing // 100), DIM)
    index = _index(args.index, args.existing, rng, centre_vectors)
    new = members(rng, centre_vectors, rng.integers(0, len(centre_vectors), args.adds))
    queries = members(rng, centre_vectors, rng.integers(0, len(centre_vectors), 256))
    lock = TimedLock()
    index._lock = lock  # the probe's clock around the same lock; every call into hnswlib still takes it
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    reader = threading.Thread(target=_reader, args=(index, queries, done, samples), daemon=True)
    reader.start()
    time.sleep(2.0)
    lock.holder = threading.get_ident()
    t0 = time.perf_counter()
    index.upsert(np.arange(args.existing + 1, args.existing + args.adds + 1, dtype=np.int64), new, threads=1)
    t1 = time.perf_counter()
    time.sleep(0.5)
    done.set()
    reader.join()
    # a lookup that started before the sync ended and finished after it began waited on it, or could have
    during = [ms for start, ms in samples if start < t1 and start + ms / 1000 > t0]
    idle = [ms for start, ms in samples if start + ms / 1000 < t0]
    result = {"existing": args.existing, "adds": args.adds, "sync_seconds": round(t1 - t0, 3),
              "adds_per_s": round(args.adds / (t1 - t0), 1), "holds_ms": _figures(lock.holds),
              "longest_holds_ms_at": [(round(lock.holds[i], 1), int(i)) for i in np.argsort(lock.holds)[::-1][:5]],
              "lookup_ms_idle": _figures(idle), "lookup_ms_during_sync": _figures(during),
              "indexed": len(index), "storage_vectors": sys.modules["storage.vectors"].__file__}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
