"""Neighbour lists saved beside a real hnswlib index file (jobs/neighbour_file.py) and read back at a restart:
unchanged lists come back as they were without a build; products moved, removed or added in the index since (the
lists saved before the index, a change pending at the save) are patched; a damaged, truncated or foreign file,
and a process killed while saving, never serve a list: the lists are built, or the previous file is used."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from appliance.config import load_config
from jobs.neighbour_lists import NeighbourLists
from storage.vectors import VectorIndex

DIM, N, DEPTH = 16, 300, 20
REPO = Path(__file__).resolve().parents[1]


def _start(path: Path, new: bool = False) -> tuple[VectorIndex, NeighbourLists]:
    """An index (new: N random vectors, saved) and its lists, caught up once: a process's start."""
    index = VectorIndex(path, DIM, load_config().index)
    if new:
        index.upsert(np.arange(1, N + 1), np.random.default_rng(7).normal(size=(N, DIM)).astype(np.float32))
        index.save(whole=True)
    else:
        assert index.load() is None
    lists = NeighbourLists(index, DEPTH, N + 10, lambda: np.sort(index.ids()), settle=0.0,
                           path=Path(f"{path}.lists"))
    index.on_change = lists.changed
    lists.catch_up()
    return index, lists


def _searched(index: VectorIndex, anchor: int) -> list[int]:
    ids, _ = index.query(index.get(np.array([anchor]))[0], DEPTH + 1)
    return [i for i in ids.tolist() if i != anchor][:DEPTH]


def _held(lists: NeighbourLists, index: VectorIndex) -> dict[int, list[int]]:
    return {a: lists.get(a, DEPTH)[0].tolist() for a in index.ids().tolist()}


def _moved(index: VectorIndex) -> None:
    """Product 5 now looks like product 9, product 3 is deleted, product 400 is new."""
    target = index.get(np.array([9]))[0]
    index.upsert(np.array([5]), (target + 0.01 * np.ones(DIM)).astype(np.float32)[None])
    index.remove(np.array([3]))
    index.upsert(np.array([400]), np.random.default_rng(3).normal(size=(1, DIM)).astype(np.float32))


def _patched_like_a_live_change(index: VectorIndex, lists: NeighbourLists) -> None:
    held = _held(lists, index)
    assert all(3 not in ids for ids in held.values())
    assert held[5] == _searched(index, 5) and held[400] == _searched(index, 400)
    assert 5 in held[9][:2]
    wrong = [a for a, ids in held.items() if ids != _searched(index, a)]
    joined = [a for a in held if {5, 400} & set(_searched(index, a))]
    assert len(wrong) <= len(joined) // 10, (wrong, joined)  # as a live patch: see test_neighbour_lists.py


def test_a_restart_reads_the_lists_back_instead_of_building_them(tmp_path, caplog) -> None:
    index, lists = _start(tmp_path / "p.hnsw", new=True)
    before = _held(lists, index)
    lists.stop()
    saved = Path(f"{index.path}.lists").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="appliance.widgets"):
        index, lists = _start(index.path)
    assert "building neighbour lists" not in caplog.text
    assert "read from p.hnsw.lists: 0 changed since, 0 more to search" in caplog.text
    assert lists.built.is_set() and _held(lists, index) == before
    lists.stop()  # nothing changed: the file is not written again
    assert Path(f"{index.path}.lists").stat().st_mtime_ns == saved


def test_an_index_changed_after_the_lists_were_saved_is_patched_at_the_restart(tmp_path, caplog) -> None:
    """The lists were saved when built; the index took changes and was saved, then the process died."""
    index, _ = _start(tmp_path / "p.hnsw", new=True)
    _moved(index)
    index.save()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="appliance.widgets"):
        index, lists = _start(index.path)
    assert "read from p.hnsw.lists: 3 changed since" in caplog.text and "building" not in caplog.text
    _patched_like_a_live_change(index, lists)


def test_a_change_pending_when_the_lists_were_saved_is_patched_at_the_restart(tmp_path) -> None:
    """Saved between a change and its patch: the index already holds the new vector, the lists not yet."""
    index, lists = _start(tmp_path / "p.hnsw", new=True)
    _moved(index)
    lists.save()
    index.save()
    index, lists = _start(index.path)
    _patched_like_a_live_change(index, lists)


def _flip(raw: bytes) -> bytes:
    at = len(raw) // 2
    return raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1:]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "empty", "missing", "another depth"])
def test_a_damaged_missing_or_foreign_file_builds_the_lists_from_the_index(tmp_path, caplog, damage) -> None:
    index, lists = _start(tmp_path / "p.hnsw", new=True)
    _moved(index)  # told to the lists: the file is older than the index, as a build would not know
    index.save()
    file = Path(f"{index.path}.lists")
    raw = file.read_bytes()
    if damage == "another depth":
        deeper = NeighbourLists(index, DEPTH + 5, N, lambda: np.sort(index.ids()), settle=0.0, path=file)
        deeper.catch_up()
    else:
        file.write_bytes({"flipped byte": _flip(raw), "truncated": raw[:len(raw) // 3], "empty": b""}.get(damage, raw))
        if damage == "missing":
            file.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="appliance.widgets"):
        index, lists = _start(index.path)
    assert "building neighbour lists" in caplog.text
    assert ("not used" in caplog.text) == (damage != "missing")
    assert _held(lists, index) == {a: _searched(index, a) for a in index.ids().tolist()}


KILLED = textwrap.dedent("""
    import os, sys
    import numpy as np
    from pathlib import Path
    from appliance.config import load_config
    from jobs import neighbour_file
    from jobs.neighbour_lists import NeighbourLists
    from storage.vectors import VectorIndex
    index = VectorIndex(Path(sys.argv[1]), 16, load_config().index)
    assert index.load() is None
    lists = NeighbourLists(index, 20, 310, lambda: np.sort(index.ids()), settle=0.0, path=Path(sys.argv[1] + ".lists"))
    index.on_change = lists.changed
    lists.catch_up()
    index.upsert(np.array([5]), (index.get(np.array([9]))[0] + 0.01).astype(np.float32)[None])
    index.remove(np.array([3]))
    index.upsert(np.array([400]), np.random.default_rng(3).normal(size=(1, 16)).astype(np.float32))
    index.save()
    lists.catch_up()
    neighbour_file.os.fsync = lambda fd: os._exit(9)  # dies with the new file written, before it is renamed
    lists.stop()
""")


def test_a_process_killed_while_saving_the_lists_leaves_the_previous_file(tmp_path, caplog) -> None:
    index, _ = _start(tmp_path / "p.hnsw", new=True)
    killed = subprocess.run([sys.executable, "-c", KILLED, str(index.path)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    assert Path(f"{index.path}.lists.tmp").stat().st_size > 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="appliance.widgets"):
        index, lists = _start(index.path)
    assert "read from p.hnsw.lists: 3 changed since" in caplog.text  # the file saved at the build
    assert not Path(f"{index.path}.lists.tmp").exists()
    _patched_like_a_live_change(index, lists)


def test_lists_turned_off_read_nothing_back(tmp_path) -> None:
    index, _ = _start(tmp_path / "p.hnsw", new=True)
    off = NeighbourLists(index, DEPTH, 0, lambda: np.sort(index.ids()), settle=0.0, path=Path(f"{index.path}.lists"))
    off.catch_up()
    assert len(off) == 0 and off.get(1, DEPTH) is None
