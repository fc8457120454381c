"""IndexMirror.sync takes the mirror's lock a piece at a time: an edit's `put` (or a removal) made while a long sync
runs waits for one piece, not for the sync, and the sync's later pieces do not undo it. Real DuckDB (a table of user
vectors), real hnswlib."""

from __future__ import annotations

import threading
import time

import numpy as np

from appliance.config import Config
from appliance.types import now_utc
from jobs.indexing import SYNC_PIECE, IndexMirror
from storage.db import Database
from storage.users import UserStore
from storage.vectors import VectorIndex

DIM = 384
N = 1500  # enough adds for the sync to run well past one piece


def _stored(db: Database, config: Config, rng: np.random.Generator) -> tuple[UserStore, IndexMirror]:
    users = UserStore(db)
    now = now_utc()
    users.save(list(range(1, N + 1)), rng.standard_normal((N, DIM)).astype(np.float32), "t", [now] * N, now)
    index = VectorIndex(config.data_path / "users.hnsw", DIM, config.index)
    return users, IndexMirror(index, users.vector_pages, users.vector_ids)


def _syncing(mirror: IndexMirror) -> threading.Thread:
    """A sync started in a thread, returned once it has added its first vectors (and is far from done)."""
    thread = threading.Thread(target=mirror.sync)
    thread.start()
    deadline = time.monotonic() + 60
    while len(mirror.index) == 0 and time.monotonic() < deadline:
        time.sleep(0.0005)
    assert 0 < len(mirror.index) < N, "the sync ended before the test could act during it"
    return thread


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_a_put_during_a_sync_waits_for_one_piece_not_the_sync(db: Database, config: Config) -> None:
    """Fails on the base: `put` read under the lock only once all N of the sync were in."""
    rng = np.random.default_rng(1)
    users, mirror = _stored(db, config, rng)
    edited = rng.standard_normal(DIM).astype(np.float32)
    held_when_read: list[int] = []

    def read() -> tuple[np.ndarray, np.ndarray]:  # under the mirror's lock, as an edit's read of DuckDB is
        held_when_read.append(len(mirror.index))
        return np.array([N + 1], np.int64), edited[None, :]

    thread = _syncing(mirror)
    mirror.put(read)
    thread.join()
    assert held_when_read[0] < N - SYNC_PIECE  # the put went in between the sync's pieces
    assert len(mirror.index) == N + 1
    np.testing.assert_allclose(mirror.index.get(np.array([N + 1]))[0], _unit(edited), atol=1e-5)


def test_a_vector_put_during_a_sync_is_not_set_back_by_its_older_snapshot(db: Database, config: Config) -> None:
    rng = np.random.default_rng(2)
    users, mirror = _stored(db, config, rng)
    thread = _syncing(mirror)
    edited = rng.standard_normal((1, DIM)).astype(np.float32)
    now = now_utc()
    users.save([N], edited, "t", [now], now)  # the last id: in the sync's last piece, read from its older snapshot
    mirror.put(lambda: (np.array([N], np.int64), edited))
    thread.join()
    np.testing.assert_allclose(mirror.index.get(np.array([N]))[0], _unit(edited[0]), atol=1e-5)
    assert mirror.sync() == 1  # the next sync reads the edit again (its time is past `synced_until`), same vector
    np.testing.assert_allclose(mirror.index.get(np.array([N]))[0], _unit(edited[0]), atol=1e-5)


def test_a_removal_during_a_sync_is_not_undone_by_it(db: Database, config: Config) -> None:
    rng = np.random.default_rng(3)
    users, mirror = _stored(db, config, rng)
    thread = _syncing(mirror)
    with db.write() as cur:
        UserStore.delete_in(cur, [N])
    users.forget([N])
    mirror.remove([N])
    thread.join()
    assert N not in set(mirror.index.ids().tolist())
    assert len(mirror.index) == N - 1
    mirror.sync()
    assert N not in set(mirror.index.ids().tolist())
