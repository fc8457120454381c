"""A data directory whose disk stops taking writes: 503 and readiness false, nothing acknowledged that is not
durable, and recovery (DuckDB reopened after a fatal invalidation) once it can write again.

The fault is the kernel's: `chattr +i` on the data directory and its files makes every write fail (EPERM),
through file descriptors DuckDB already holds open too, even for root (chmod would not stop root).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.errors import StoreUnavailable
from storage.db import Database
from tests.helpers import LOCAL, wait_until
from web.app import create_app

INSERT_EVENT = "INSERT INTO events (event_id, customer_id, product_id, event_name, ts, received_at) VALUES"


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", "-R", flag, str(path)], capture_output=True).returncode == 0


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """The directory and everything in it refuse writes until the block ends."""
    try:
        if not _chattr("+i", path):
            pytest.skip("chattr +i is not available here (needs root and ext4/xfs/btrfs)")
        yield
    finally:
        _chattr("-i", path)


def count(db: Database) -> int:
    return db.read("SELECT count(*) FROM events")[0][0]


def test_a_fatal_checkpoint_is_recovered_by_reopening_and_keeps_every_commit(tmp_path):
    db = Database(tmp_path / "d" / "appliance.duckdb")
    try:
        with db.write() as cur:
            cur.execute(f"{INSERT_EVENT} (1, 1, 1, \'product_viewed\', now(), now())")
        with read_only(tmp_path / "d"):
            with pytest.raises(StoreUnavailable, match="FATAL"):
                db.checkpoint()  # DuckDB invalidates the whole instance here
            with pytest.raises(StoreUnavailable):
                db.read("SELECT 1")
            with pytest.raises(StoreUnavailable), db.write() as cur:
                cur.execute(f"{INSERT_EVENT} (2, 1, 1, \'product_viewed\', now(), now())")
            db._retry_at = 0.0  # skip the one-second pause between recovery attempts
            assert "cannot write" in db.check()
        db._retry_at = 0.0  # skip the one-second pause between recovery attempts
        assert db.check() is None  # reopened
        assert count(db) == 1
        with db.write() as cur:
            cur.execute(f"{INSERT_EVENT} (3, 1, 1, \'product_viewed\', now(), now())")
    finally:
        db.close()
    again = Database(tmp_path / "d" / "appliance.duckdb")
    assert [r[0] for r in again.read("SELECT event_id FROM events ORDER BY 1")] == [1, 3]
    again.close()


def test_a_read_only_disk_turns_writes_into_503_and_the_appliance_recovers(tmp_path, encoder):
    data = tmp_path / "data"
    config = load_config(overrides={  # a long poll: the idle consumer does not write while the fault begins
        "server": {"data_dir": str(data), "load_demo": False}, "jobs": {"enabled": False},
        "realtime": {"receive_wait_seconds": 30.0},
    })
    event = {"customer_id": 5, "product_id": 1, "event_name": "product_viewed"}
    acknowledged = 0
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        for _ in range(3):
            acknowledged += client.post("/events", json=event).json()["accepted"]
        services = client.app.state.services
        wait_until(lambda: client.get("/queue").json()["depth"] == 0, what="queue drained")
        with read_only(data):
            with pytest.raises(StoreUnavailable, match="FATAL"):
                services.db.checkpoint()  # the FATAL that used to leave every endpoint at 500 until restart
            for call in (
                lambda: client.post("/events", json=event),
                lambda: client.post("/events", json=[event, event]),
                lambda: client.put("/products/9", json={"name": "Mug", "category_path": ["Home"]}),
                lambda: client.delete("/customers/5"),
            ):
                refused = call()
                assert refused.status_code == 503, refused.text
                assert refused.headers["content-type"].startswith("application/problem+json")
                assert refused.json()["type"] == "/problems/store-unavailable" and refused.headers["Retry-After"]
            ready = client.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
            assert "cannot write" in ready.json()["detail"]
            assert client.get("/health/live").status_code == 200
            assert client.get("/customers/5/feed").status_code == 503  # reads too, until DuckDB is reopened
        wait_until(lambda: client.get("/health/ready").status_code == 200, timeout=30, what="recovery")
        accepted = client.post("/events", json=event)
        assert accepted.status_code == 202
        acknowledged += accepted.json()["accepted"]
        assert client.get("/health/ready").json()["events"] == acknowledged
        assert client.delete("/customers/77").status_code == 200
    assert count(Database(data / "appliance.duckdb")) == acknowledged  # what was acknowledged is what is on disk


def test_a_refused_checkpoint_is_deferred_and_the_store_keeps_writing(db: Database) -> None:
    """DuckDB refuses CHECKPOINT while another transaction writes (drawing from a sequence counts): the
    checkpoint says so (False) after its tries instead of failing its job, writes go on, and it runs later."""
    other = db._conn.cursor()  # a transaction outside the writer lock, as a cursor's implicit one can be
    other.begin()
    other.execute("SELECT nextval('event_seq')").fetchall()
    assert db.checkpoint() is False
    assert db.check() is None
    with db.write() as cur:
        cur.execute(f"{INSERT_EVENT} (1, 1, 1, 'product_viewed', now(), now())")
    other.commit()
    assert db.checkpoint() is True
    assert db.read("SELECT count(*) FROM events") == [(1,)]
