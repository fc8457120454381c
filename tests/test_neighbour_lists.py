"""Neighbour lists computed ahead (jobs/neighbour_lists.py) on a real hnswlib index: built equal to the index's own
search, patched when a vector moves or leaves equal to searching again, not served while a change is pending,
and built again after a bulk change."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.config import load_config
from jobs import neighbour_lists
from jobs.neighbour_lists import NeighbourLists
from storage.vectors import VectorIndex

DIM, N, DEPTH = 16, 400, 20


@pytest.fixture
def index(tmp_path) -> VectorIndex:
    index = VectorIndex(tmp_path / "products.hnsw", DIM, load_config().index)
    rng = np.random.default_rng(7)
    index.upsert(np.arange(1, N + 1), rng.normal(size=(N, DIM)).astype(np.float32))
    return index


def _lists(index: VectorIndex, limit: int = N) -> NeighbourLists:
    lists = NeighbourLists(index, DEPTH, limit, lambda: np.arange(1, N + 1), settle=0.0)
    index.on_change = lists.changed
    lists.catch_up()
    return lists


def _searched(index: VectorIndex, anchor: int) -> list[int]:
    ids, _ = index.query(index.get(np.array([anchor]))[0], DEPTH + 1)
    return [i for i in ids.tolist() if i != anchor][:DEPTH]


def test_a_build_holds_each_products_search_and_serves_no_deeper_than_built(index: VectorIndex) -> None:
    lists = _lists(index, limit=300)
    assert len(lists) == 300 and lists.built.is_set()
    for anchor in (1, 57, 300):
        ids, cosines = lists.get(anchor, DEPTH)
        assert ids.tolist() == _searched(index, anchor)
        assert np.all(np.diff(cosines) <= 1e-6)  # best first
    assert lists.get(301, DEPTH) is None  # beyond the limit: searched when asked
    assert lists.get(1, DEPTH + 1) is None
    assert lists.get(1, 5)[0].tolist() == _searched(index, 1)[:5]


def test_a_moved_vector_is_patched_into_its_new_neighbours_lists_and_out_of_its_old_ones(index) -> None:
    lists = _lists(index)
    held_before = [a for a in range(1, N + 1) if 5 in lists.get(a, DEPTH)[0].tolist()]
    target = index.get(np.array([9]))[0]
    index.upsert(np.array([5]), (target + 0.01 * np.ones(DIM)).astype(np.float32)[None])  # product 5 now looks like 9
    assert lists.get(9, DEPTH) is None  # a change is pending: nothing is served until it is patched
    lists.catch_up()
    assert 5 in lists.get(9, DEPTH)[0].tolist()[:2]
    assert lists.get(5, DEPTH)[0].tolist() == _searched(index, 5)
    left = [a for a in held_before if 5 not in _searched(index, a)]
    assert left and all(5 not in lists.get(a, DEPTH)[0].tolist() for a in left)
    wrong = [a for a in range(1, N + 1) if lists.get(a, DEPTH)[0].tolist() != _searched(index, a)]
    joined = [a for a in range(1, N + 1) if 5 in _searched(index, a)]
    assert len(wrong) <= len(joined) // 10, (wrong, joined)  # a list it joins beyond its REACH x depth nearest


def test_a_removed_product_leaves_every_list(index: VectorIndex) -> None:
    lists = _lists(index)
    holders = [a for a in range(1, N + 1) if 3 in lists.get(a, DEPTH)[0].tolist()]
    assert holders
    index.remove(np.array([3]))
    lists.catch_up()
    for anchor in holders:  # searched again: full, without it
        assert lists.get(anchor, DEPTH)[0].tolist() == _searched(index, anchor)
        assert 3 not in lists.get(anchor, DEPTH)[0].tolist()


def test_a_bulk_change_builds_every_list_again(index: VectorIndex, monkeypatch) -> None:
    monkeypatch.setattr(neighbour_lists, "BULK_MIN", 10)
    lists = _lists(index)
    rng = np.random.default_rng(8)
    moved = np.arange(1, 101)
    index.upsert(moved, rng.normal(size=(100, DIM)).astype(np.float32))
    assert lists.get(200, DEPTH) is None
    lists.catch_up()
    for anchor in (1, 150, 400):
        assert lists.get(anchor, DEPTH)[0].tolist() == _searched(index, anchor)


def test_a_small_index_serves_its_whole_list_and_none_are_kept_at_limit_zero(tmp_path) -> None:
    index = VectorIndex(tmp_path / "products.hnsw", DIM, load_config().index)
    index.upsert(np.arange(1, 6), np.random.default_rng(1).normal(size=(5, DIM)).astype(np.float32))
    lists = NeighbourLists(index, DEPTH, 100, lambda: np.arange(1, 6), settle=0.0)
    lists.catch_up()
    assert sorted(lists.get(1, DEPTH)[0].tolist()) == [2, 3, 4, 5]  # all there is: served at any depth
    off = NeighbourLists(index, DEPTH, 0, lambda: np.arange(1, 6), settle=0.0)
    off.catch_up()
    assert len(off) == 0 and off.get(1, DEPTH) is None


def test_after_a_bulk_change_the_lists_wait_for_the_index_to_settle(index: VectorIndex, monkeypatch) -> None:
    monkeypatch.setattr(neighbour_lists, "BULK_MIN", 10)
    lists = NeighbourLists(index, DEPTH, N, lambda: np.arange(1, N + 1), settle=0.5)
    index.on_change = lists.changed
    lists.catch_up()  # the first build does not wait
    assert lists.get(1, DEPTH) is not None
    index.upsert(np.arange(1, 101), np.random.default_rng(9).normal(size=(100, DIM)).astype(np.float32))
    lists.catch_up()  # within the settling time: waits it out, builds nothing yet
    assert lists.get(1, DEPTH) is None  # searched when asked meanwhile
    lists.catch_up()  # settled now
    assert lists.get(1, DEPTH)[0].tolist() == _searched(index, 1)


def test_an_adopted_twin_builds_every_list_again(index: VectorIndex) -> None:
    """A compaction swaps in a twin filled aside (`adopt`): vectors it took in were never patched into the lists."""
    lists = _lists(index)
    fresh = index.twin()
    rng = np.random.default_rng(9)
    fresh.upsert(np.arange(1, N + 1), rng.normal(size=(N, DIM)).astype(np.float32))
    index.adopt(fresh)
    assert lists.get(200, DEPTH) is None
    lists.catch_up()
    for anchor in (1, 150, 400):
        assert lists.get(anchor, DEPTH)[0].tolist() == _searched(index, anchor)


def test_a_product_added_after_a_removal_gets_a_row_of_its_own(index: VectorIndex) -> None:
    """A removed product's row is not reused: the next new product took the last product's row, whose list then
    served the new product's neighbours."""
    lists = _lists(index)
    index.remove(np.array([3]))
    lists.catch_up()
    index.upsert(np.array([N + 1]), np.random.default_rng(4).normal(size=(1, DIM)).astype(np.float32))
    lists.catch_up()
    index.remove(np.array([7]))  # a patch scans every row for holders, the emptied ones too
    lists.catch_up()
    for anchor in (N, N + 1):
        assert lists.get(anchor, DEPTH)[0].tolist() == _searched(index, anchor)
