"""The structural check of an hnswlib file on a real index with many upper-level lists: intact passes, and each
kind of damage in the upper levels (where the app-level damage tests' 14-product index has hardly anything) is
caught before hnswlib would read it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np
import pytest

from storage.hnsw_file import HEADER, DamagedIndex, check_structure

DIM, N, M = 16, 3000, 8


@pytest.fixture(scope="module")
def index_bytes(tmp_path_factory) -> bytes:
    vectors = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    index = hnswlib.Index(space="cosine", dim=DIM)
    index.init_index(max_elements=N, M=M, ef_construction=40, random_seed=3)
    index.add_items(vectors, np.arange(N))
    path = tmp_path_factory.mktemp("hnsw") / "i.hnsw"
    index.save_index(str(path))
    return path.read_bytes()


def _upper_lists(raw: bytes) -> list[tuple[int, int]]:
    """(byte offset of its size word, size in bytes) of every element's upper-level block, in file order."""
    header = np.frombuffer(raw[:HEADER.itemsize], HEADER)[0]
    at = HEADER.itemsize + int(header["count"]) * int(header["size_per_element"])
    out = []
    for _ in range(int(header["count"])):
        size = int.from_bytes(raw[at:at + 4], "little")
        out.append((at, size))
        at += 4 + size
    return out


def _word(raw: bytearray, offset: int, value: int) -> None:
    raw[offset:offset + 4] = value.to_bytes(4, "little")


def _first_list(raw: bytearray) -> int:
    return next(at for at, size in _upper_lists(bytes(raw)) if size)


def upper_size_not_whole(raw: bytearray) -> None:
    at = _first_list(raw)
    _word(raw, at, int.from_bytes(raw[at:at + 4], "little") + 4)


def upper_too_many_levels(raw: bytearray) -> None:
    at = _first_list(raw)
    _word(raw, at, 64 * 4 * (1 + M))


def upper_link_outside(raw: bytearray) -> None:
    *_, (at, size) = [(a, s) for a, s in _upper_lists(bytes(raw)) if s]  # the last list's first neighbour
    assert int.from_bytes(raw[at + 4:at + 8], "little") & 0xFFFF, "the list has neighbours"
    _word(raw, at + 8, N + 5)


def upper_count_too_long(raw: bytearray) -> None:
    at = _first_list(raw)
    _word(raw, at + 4, M + 1)


def trailing_bytes(raw: bytearray) -> None:
    raw += bytes(8)


def truncated_upper(raw: bytearray) -> None:
    del raw[-4:]


def odd_tail(raw: bytearray) -> None:
    raw += b"\x00"


def vector_not_finite(raw: bytearray) -> None:
    header = np.frombuffer(bytes(raw[:HEADER.itemsize]), HEADER)[0]
    at = HEADER.itemsize + (N - 1) * int(header["size_per_element"]) + int(header["offset_data"])
    raw[at:at + 4] = np.float32(np.nan).tobytes()


def vector_not_unit(raw: bytearray) -> None:
    header = np.frombuffer(bytes(raw[:HEADER.itemsize]), HEADER)[0]
    at = HEADER.itemsize + 100_000 % N * int(header["size_per_element"]) + int(header["offset_data"])
    raw[at:at + 4 * DIM] = (np.frombuffer(bytes(raw[at:at + 4 * DIM]), np.float32) * 1.01).tobytes()


DAMAGE: dict[str, Callable[[bytearray], None]] = {
    "upper size not whole records": upper_size_not_whole,
    "upper size beyond the top level": upper_too_many_levels,
    "upper link outside the index": upper_link_outside,
    "upper count longer than M": upper_count_too_long,
    "bytes after the last list": trailing_bytes,
    "truncated in the upper levels": truncated_upper,
    "a byte after the last list": odd_tail,
    "a vector not finite": vector_not_finite,
    "a vector not unit length": vector_not_unit,
}


def test_an_intact_index_passes_and_has_many_upper_lists(index_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "i.hnsw"
    path.write_bytes(index_bytes)
    assert check_structure(path, DIM, normalised=True) == N
    assert sum(size > 0 for _, size in _upper_lists(index_bytes)) > N // (2 * M)


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damage_in_the_upper_levels_and_vectors_is_caught(damage: str, index_bytes: bytes, tmp_path: Path) -> None:
    raw = bytearray(index_bytes)
    DAMAGE[damage](raw)
    path = tmp_path / "i.hnsw"
    path.write_bytes(bytes(raw))
    with pytest.raises(DamagedIndex):
        check_structure(path, DIM, normalised=True)
