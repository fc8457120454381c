"""`VectorIndex.lookup` reads the vectors unchanged since the file on disk from that file (`FileRows`) and the
others from hnswlib: real hnswlib files, every answer compared with hnswlib's own `get_items`, through saves, log
appends, a fold, a reload, a change made while the file is written, and a rebuild adopted."""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np

from appliance.config import load_config
from storage import vector_files as vectors_module
from storage.vectors import VectorIndex

DIM = 8


class Counted:
    """hnswlib's index, counting the labels asked of `get_items` (everything else passed through)."""

    def __init__(self, index: hnswlib.Index) -> None:
        self._index, self.asked = index, 0

    def get_items(self, ids, *args):  # noqa: ANN001, ANN002, ANN201
        self.asked += len(ids)
        return self._index.get_items(ids, *args)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._index, name)


def _index(path: Path, n: int) -> VectorIndex:
    index = VectorIndex(path, DIM, load_config().index)
    index.upsert(np.arange(1, n + 1), np.random.default_rng(1).normal(size=(n, DIM)).astype(np.float32))
    return index


def _looked_up(index: VectorIndex, ids: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
    """lookup's answer, checked against hnswlib's vectors bit for bit, and how many labels it asked hnswlib."""
    counted = index._index = Counted(index._index)
    try:
        found = index.lookup(ids)
    finally:
        index._index = counted._index
    held = [int(i) for i in ids if int(i) in set(index.ids().tolist())]
    assert sorted(found) == sorted(held)
    if held:
        truth = np.asarray(index._index.get_items(held), np.float32)
        assert np.array_equal(np.stack([found[i] for i in held]), truth)
    return found, counted.asked


def test_saved_vectors_come_from_the_file_and_changed_ones_from_hnswlib(tmp_path) -> None:
    index = _index(tmp_path / "p.hnsw", 300)
    ids = np.arange(1, 301)
    assert _looked_up(index, ids)[1] == 300  # nothing on disk yet: all from hnswlib
    index.save()  # whole
    assert _looked_up(index, ids)[1] == 0
    assert len(_looked_up(index, np.arange(290, 320))[0]) == 11  # 301..319 were never added
    index.upsert(np.arange(1, 6), np.ones((5, DIM), np.float32))
    index.remove(np.array([6, 7]))
    found, asked = _looked_up(index, ids)
    assert asked == 5 and 6 not in found and np.allclose(found[1], np.ones(DIM) / np.sqrt(DIM))
    index.save()  # a log append: the file on disk is the same, the changed labels still come from hnswlib
    assert index.log_path.exists() and _looked_up(index, ids)[1] == 5
    index.save(whole=True)
    assert _looked_up(index, ids)[1] == 0
    index.upsert(np.array([6]), np.full((1, DIM), 2.0, np.float32))  # a removed label revived
    assert _looked_up(index, ids)[1] == 1


def test_a_reload_marks_what_its_log_replays_and_a_fold_installs_a_new_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(vectors_module, "LOG_MIN", 20)
    monkeypatch.setattr(vectors_module, "LOG_SHARE", 0.1)
    index = _index(tmp_path / "p.hnsw", 300)
    index.save()
    index.upsert(np.arange(1, 11), np.ones((10, DIM), np.float32))
    index.save()  # to the log
    loaded = VectorIndex(tmp_path / "p.hnsw", DIM, load_config().index)
    assert loaded.load() is None
    assert _looked_up(loaded, np.arange(1, 301))[1] == 10  # the log's labels, replayed over the file
    loaded.upsert(np.arange(11, 41), np.full((30, DIM), 3.0, np.float32))
    inode = loaded.path.stat().st_ino
    loaded.save()  # past the log's share: folded into a new file by another process
    assert loaded.path.stat().st_ino != inode and not loaded.log_path.exists()
    assert _looked_up(loaded, np.arange(1, 301))[1] == 0


def test_a_change_made_while_the_file_is_written_is_read_from_hnswlib(tmp_path, monkeypatch) -> None:
    index = _index(tmp_path / "p.hnsw", 100)
    index.save()
    real = vectors_module.write_state

    def writing(path: Path, state: dict) -> tuple[int, str]:  # another thread's change, after the copy
        index.upsert(np.array([3, 101]), np.full((2, DIM), 5.0, np.float32))
        return real(path, state)

    monkeypatch.setattr(vectors_module, "write_state", writing)
    index.save(whole=True)
    monkeypatch.setattr(vectors_module, "write_state", real)
    found, asked = _looked_up(index, np.arange(1, 102))
    assert asked == 2 and np.allclose(found[3], np.ones(DIM) / np.sqrt(DIM))


def test_an_adopted_rebuild_is_read_from_hnswlib_until_it_is_saved(tmp_path) -> None:
    index = _index(tmp_path / "p.hnsw", 50)
    index.save()
    fresh = index.twin()
    fresh.upsert(np.arange(1, 51), np.random.default_rng(9).normal(size=(50, DIM)).astype(np.float32))
    index.adopt(fresh)
    assert _looked_up(index, np.arange(1, 51))[1] == 50
    index.save()
    assert _looked_up(index, np.arange(1, 51))[1] == 0
