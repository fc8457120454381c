"""One-off for BENCHMARKS.md "Cold-start, eighth round": what serving a second (text-side) vector per shopper
would cost, had the quality measurement kept it. Per request: the cosine of the shopper's text-side vector with
every product without events (a brute-force dot over a cached float32 matrix of them, what an index cannot do
cheaply since hnswlib filters by a Python callback) and the order of the best `depth`; per event: the text side
itself (`user_vectors(..., attention=False)` over a history of 20). Process CPU seconds per call, one thread.
Run: PYTHONPATH=. python bench/probes/cold8_serving_cost.py OUT.json"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from appliance.config import load_config
from appliance.tower import UserTower, user_vectors

DIM, HISTORY, DEPTH = 384, 20, 10


def cpu_per_call(fn, calls):
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def main(out_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    report = {"command": "python bench/probes/cold8_serving_cost.py " + out_path, "load_average": os.getloadavg(),
              "bytes_per_shopper": DIM * 4, "per_request_cpu_ms": {}}
    user = rng.standard_normal(DIM).astype(np.float32)
    for cold in (1_000, 10_000, 100_000):
        matrix = rng.standard_normal((cold, DIM)).astype(np.float32)

        def request(matrix=matrix):
            cosines = matrix @ user
            best = np.argpartition(-cosines, DEPTH)[:DEPTH]
            return best[np.argsort(-cosines[best])]

        report["per_request_cpu_ms"][str(cold)] = 1000 * cpu_per_call(request, max(20, 2_000_000 // cold))
        report.setdefault("cached_matrix_mib", {})[str(cold)] = matrix.nbytes / 2**20
    model = UserTower(load_config(None).tower, DIM).eval()
    history = [rng.standard_normal((1, HISTORY, DIM)).astype(np.float32), np.zeros((1, HISTORY), np.int64),
               rng.uniform(0, 100, (1, HISTORY)).astype(np.float32), np.ones((1, HISTORY), bool)]
    report["per_event_cpu_ms"] = {
        "text_side": 1000 * cpu_per_call(lambda: user_vectors(model, *history, attention=False), 500),
        "tower": 1000 * cpu_per_call(lambda: user_vectors(model, *history), 500)}
    print(json.dumps(report, indent=1))
    Path(out_path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:2])
