"""A real server in a subprocess, killed with SIGKILL mid-stream or mid bulk upload: nothing acknowledged is lost."""

import os
import signal
import socket
import subprocess
import sys
import threading

import httpx

from storage.db import Database
from tests.helpers import wait_on_server

# The waits on the server count its own CPU seconds, not the wall clock: a start (or restart) costs ~5 CPU s, 4.2 of
# them importing torch and the rest of the code (load 11-13: 30 s of wall time; at load 20, over the 120 s the waits
# used to allow). A wait fails when the server exits, spends its budget, or gets nowhere in 30 minutes (a hang).
START_CPU = 60.0  # a start: imports, DuckDB, the indexes, the model, the demo shop the first time
WORK_CPU = 60.0  # the restart's backlog: a few hundred events, 20 shoppers' vectors, an index sync
EMBED_CPU = 600.0  # encoding the lines a killed upload left (up to 600) with the model load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data_dir, port) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "APPLIANCE_DEMO__PRODUCTS": "60", "APPLIANCE_DEMO__CUSTOMERS": "3",
           "APPLIANCE_DEMO__DAYS": "1", "APPLIANCE_DEMO__TRAIN": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _queue_empty(base: str) -> bool:
    stats = httpx.get(f"{base}/queue").json()
    return stats["depth"] + stats["in_flight"] == 0


def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(tmp_path / "data", port)
    acknowledged: list[int] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=base, timeout=5) as http:
            n = 0
            while not stop.is_set():
                n += 1
                batch = [{"customer_id": 7000 + (n + i) % 20, "product_id": 1 + (n * 7 + i) % 60,
                          "event_name": "product_clicked"} for i in range(5)]
                try:
                    answer = http.post("/events", json=batch)
                except httpx.HTTPError:
                    return  # the server died under this request: it was never acknowledged
                if answer.status_code == 202:
                    acknowledged.extend(answer.json()["event_ids"])

    try:
        wait_on_server(lambda: _ready(base), server, START_CPU, "first start")
        sender = threading.Thread(target=send)
        sender.start()
        wait_on_server(lambda: len(acknowledged) >= 300, server, WORK_CPU, "events acknowledged")
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        stop.set()
        sender.join(10)
        server = _serve(tmp_path / "data", port)
        wait_on_server(lambda: _ready(base), server, START_CPU, "restart")
        wait_on_server(lambda: _queue_empty(base), server, WORK_CPU, "queue drained after restart")
        # a shopper whose events were processed before their products were embedded gets a vector once they are
        wait_on_server(lambda: all(httpx.get(f"{base}/customers/{c}/feed").json()["personalized"]
                                   for c in range(7000, 7020)), server, WORK_CPU, "every shopper's vector")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    db = Database(tmp_path / "data" / "appliance.duckdb")
    try:
        ours = "(SELECT key FROM customer_ids WHERE TRY_CAST(ext AS INTEGER) >= 7000)"  # the shop's ids 7000..
        stored = {r[0] for r in db.read(f"SELECT event_id FROM events WHERE customer_id IN {ours}")}
        assert set(acknowledged) <= stored
        assert db.read("SELECT count(*) FROM queue_messages")[0][0] == 0  # every message processed and deleted
        customers = db.read(f"SELECT count(DISTINCT customer_id) FROM events WHERE customer_id IN {ours}")[0][0]
        vectors = db.read(f"SELECT count(*) FROM user_vectors WHERE customer_id IN {ours}")[0][0]
        assert vectors == customers == 20
        lag = db.read(f"""SELECT count(*) FROM user_vectors u JOIN (
                             SELECT customer_id, max(ts) AS last FROM events GROUP BY 1) e USING (customer_id)
                          WHERE u.customer_id IN {ours} AND u.last_event_at <> e.last""")[0][0]
        assert lag == 0  # each vector reflects the shopper's newest event
    finally:
        db.close()
    assert len(acknowledged) == len(set(acknowledged)) >= 300


def test_sigkill_while_a_bulk_upload_embeds_loses_no_acknowledged_product(tmp_path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(tmp_path / "data", port)
    catalog = [{"product_id": f"bulk-{i}", "name": f"Trail running shoe model {i}", "merchant": "Brand",
                "category_path": ["Shoes", "Sneakers", "Running"], "price": 50.0 + i % 90} for i in range(600)]
    try:
        wait_on_server(lambda: _ready(base), server, START_CPU, "first start")
        acknowledged = 0
        for start in range(0, len(catalog), 200):
            answer = httpx.post(f"{base}/products", json=catalog[start:start + 200], timeout=60)
            assert answer.status_code == 202
            acknowledged += answer.json()["received"]
        health = httpx.get(f"{base}/health/ready").json()
        assert health["pending_embeddings"] > 0  # killed while the background indexer still had lines to encode
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        server = _serve(tmp_path / "data", port)
        wait_on_server(lambda: _ready(base), server, START_CPU, "restart")
        wait_on_server(lambda: httpx.get(f"{base}/health/ready").json()["pending_embeddings"] == 0, server,
                       EMBED_CPU, "every line embedded after the restart")
        products = httpx.get(f"{base}/health/ready").json()["products"]
        wait_on_server(lambda: httpx.get(f"{base}/health/ready").json()["indexed"] == products, server, WORK_CPU,
                       "index sync")
        similar = httpx.get(f"{base}/products/bulk-599/similar").json()
        assert any(str(item["product"]["product_id"]).startswith("bulk-") for item in similar["items"])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert acknowledged == len(catalog)
    db = Database(tmp_path / "data" / "appliance.duckdb")
    try:
        ours = "(SELECT key FROM product_ids WHERE ext LIKE 'bulk-%')"
        stored = db.read(f"""SELECT count(*), count(e.text_hash) FROM products p
                             LEFT JOIN embeddings e USING (text_hash) WHERE p.product_id IN {ours}""")[0]
        assert stored == (len(catalog), len(catalog))  # every acknowledged product stored, each with its vector
    finally:
        db.close()
