"""A large upsert adds its vectors in pieces, the index's lock released between them (real hnswlib): a query asked
meanwhile answers before the upsert ends, and a save made between two pieces leaves a loadable index holding
what came before it, the rest going to the next save."""

from __future__ import annotations

import threading
from datetime import datetime

import numpy as np

from appliance.config import load_config
from storage import vectors as vectors_module
from storage.vectors import VectorIndex

DIM = 8


def _vectors(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def _one_vector_pieces(monkeypatch) -> None:
    monkeypatch.setattr(vectors_module, "ADD_PIECE_FIRST", 1)
    monkeypatch.setattr(vectors_module, "ADD_HOLD_SECONDS", 0.0)  # every piece one vector


def test_a_query_asked_during_a_large_upsert_answers_before_the_upsert_ends(tmp_path, monkeypatch) -> None:
    _one_vector_pieces(monkeypatch)
    index = VectorIndex(tmp_path / "p.hnsw", DIM, load_config().index)
    index.upsert(np.arange(1, 101), _vectors(100, 1))
    n = 5000
    pieces: list[int] = []
    asking, answered = threading.Event(), threading.Event()
    pieces_when_answered: list[int] = []

    def ask() -> None:
        asking.set()
        labels, _ = index.query(_vectors(1, 9)[0], 5)
        assert len(labels) == 5
        answered.set()

    def changed(labels: np.ndarray | None) -> None:  # called under the index's lock, once per piece
        pieces.append(0 if labels is None else len(labels))
        if len(pieces) == 1:
            threading.Thread(target=ask, daemon=True).start()
            assert asking.wait(30)  # the reader is about to take the lock this piece holds
        if answered.is_set() and not pieces_when_answered:
            pieces_when_answered.append(len(pieces))

    index.on_change = changed
    index.upsert(np.arange(101, 101 + n), _vectors(n))
    assert answered.wait(30)
    assert pieces_when_answered and pieces_when_answered[0] < len(pieces)  # answered between two pieces
    assert len(pieces) == n and set(pieces) == {1} and len(index) == 100 + n


def test_a_save_between_two_pieces_keeps_what_came_before_and_the_next_save_the_rest(tmp_path, monkeypatch) -> None:
    _one_vector_pieces(monkeypatch)
    path = tmp_path / "p.hnsw"
    index = VectorIndex(path, DIM, load_config().index)
    index.upsert(np.arange(1, 201), _vectors(200, 1))
    index.synced_until = datetime(2026, 3, 1)
    index.save()  # the file, written whole
    saved_at: list[int] = []

    def changed(labels: np.ndarray | None) -> None:
        if len(index) == 230 and not saved_at:
            index.save()  # as the shutdown's or the reindex job's save would, between two pieces of a sync
            saved_at.append(len(index))

    index.on_change = changed
    ids, vectors = np.arange(201, 301), _vectors(100)
    index.upsert(ids, vectors)  # the sync's adds; it moves synced_until only once all are in
    assert saved_at == [230]

    crashed = VectorIndex(path, DIM, load_config().index)  # a crash before the next save: the files as they are
    assert crashed.load() is None
    assert np.array_equal(np.sort(crashed.ids()), np.arange(1, 231))
    assert crashed.synced_until == datetime(2026, 3, 1)  # the next sync reads the 70 others again
    np.testing.assert_allclose(crashed.get(ids[:30]), index.get(ids[:30]), atol=1e-6)

    index.synced_until = datetime(2026, 3, 2)
    index.save()
    reloaded = VectorIndex(path, DIM, load_config().index)
    assert reloaded.load() is None
    assert np.array_equal(np.sort(reloaded.ids()), np.arange(1, 301))
    assert reloaded.synced_until == datetime(2026, 3, 2)
    np.testing.assert_allclose(reloaded.get(ids), index.get(ids), atol=1e-6)


def test_pieces_on_several_threads_hold_enough_vectors_for_hnswlib_to_run_them_on_those_threads(
        tmp_path, monkeypatch) -> None:
    """hnswlib adds 4 x threads vectors or fewer on one thread: pieces sized by time alone (one vector each here,
    as on a large index, where a vector takes over 0.6 ms) ran a 2-thread upsert on one thread."""
    _one_vector_pieces(monkeypatch)
    for threads, expected in ((1, 1), (2, 9), (3, 13)):
        index = VectorIndex(tmp_path / f"t{threads}.hnsw", DIM, load_config().index)
        pieces: list[int] = []
        index.on_change = lambda labels, pieces=pieces: pieces.append(len(labels))
        index.upsert(np.arange(1, 101), _vectors(100), threads=threads)
        assert set(pieces[:-1]) == {expected} and 0 < pieces[-1] <= expected and sum(pieces) == 100
        assert len(index) == 100
