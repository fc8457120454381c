"""Checks of an hnswlib index file before hnswlib reads it (hnswlib trusts its input: a damaged neighbour list
crashes the process on the first query, random bytes raise OverflowError or allocate absurd sizes).

`digest` is recorded in the sidecar when the file is written and compared before it is loaded; `check_structure`
is a cheap walk of the layout written by hnswlib 0.8 (`HierarchicalNSW::saveIndex`):

    header (96 bytes): offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset,
                       offsetData (size_t each), maxlevel (int32), enterpoint_node (uint32), maxM, maxM0, M
                       (size_t), mult (double), ef_construction (size_t)
    level 0, one record per element: link count (low 16 bits of a uint32; a deleted mark in byte 2),
                       maxM0 neighbour ids (uint32), the vector (dim float32), the label (size_t)
    upper levels, per element: a uint32 byte size, then that many bytes of (count, maxM ids) records
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

HEADER = np.dtype([
    ("offset_level0", "<u8"), ("max_elements", "<u8"), ("count", "<u8"), ("size_per_element", "<u8"),
    ("label_offset", "<u8"), ("offset_data", "<u8"), ("max_level", "<i4"), ("entry_point", "<u4"),
    ("max_m", "<u8"), ("max_m0", "<u8"), ("m", "<u8"), ("mult", "<f8"), ("ef_construction", "<u8"),
])


class DamagedIndex(ValueError):
    """The file is not the index its sidecar describes, or not a well-formed hnswlib index."""


def digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_structure(path: Path, dim: int, normalised: bool) -> int:
    """Raise DamagedIndex unless the file is a well-formed index of `dim`-d vectors; returns its element count.

    Checks the header's sizes against each other and the file length, every neighbour id against the element
    count, and (cosine space, where hnswlib stores unit vectors) that every vector is finite and unit length."""
    raw = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    if len(raw) < HEADER.itemsize:
        raise DamagedIndex(f"{path.name}: {len(raw)} bytes, shorter than an hnswlib header")
    h = raw[:HEADER.itemsize].view(HEADER)[0]
    n, m0, m, size = int(h["count"]), int(h["max_m0"]), int(h["max_m"]), int(h["size_per_element"])
    links0 = 4 + 4 * m0
    expected = {
        "offset_level0": 0, "offset_data": links0, "label_offset": links0 + 4 * dim,
        "size_per_element": links0 + 4 * dim + 8, "max_m0": 2 * int(h["m"]), "max_m": int(h["m"]),
    }
    wrong = [k for k, v in expected.items() if int(h[k]) != v]
    if wrong or not 0 < m <= 4096 or n > int(h["max_elements"]) or not -1 <= int(h["max_level"]) < 64 \
            or (n and int(h["entry_point"]) >= n):
        raise DamagedIndex(f"{path.name}: inconsistent header ({', '.join(wrong) or 'counts or levels'})")
    end0 = HEADER.itemsize + n * size
    if len(raw) < end0 + 4 * n:
        raise DamagedIndex(f"{path.name}: truncated ({len(raw)} bytes for {n} elements)")
    level0 = raw[HEADER.itemsize:end0].reshape(n, size)
    _check_links(level0[:, :links0], m0, n, path)
    if n:
        vectors = np.ascontiguousarray(level0[:, links0:links0 + 4 * dim]).view("<f4")
        if not np.isfinite(vectors).all():
            raise DamagedIndex(f"{path.name}: a stored vector is not finite")
        if normalised and np.abs(np.linalg.norm(vectors, axis=1) - 1.0).max() > 1e-3:
            raise DamagedIndex(f"{path.name}: a stored vector is not unit length")
    record, at = 4 + 4 * m, end0
    for _ in range(n):  # only about 1 element in M has upper levels: a short loop
        if at + 4 > len(raw):
            raise DamagedIndex(f"{path.name}: truncated in the upper levels")
        nbytes = int(raw[at:at + 4].view("<u4")[0])
        at += 4
        if nbytes % record or nbytes // record > max(int(h["max_level"]), 0) or at + nbytes > len(raw):
            raise DamagedIndex(f"{path.name}: an upper-level neighbour list has a bad size")
        if nbytes:
            _check_links(raw[at:at + nbytes].reshape(-1, record), m, n, path)
            at += nbytes
    if at != len(raw):
        raise DamagedIndex(f"{path.name}: {len(raw) - at} bytes after the last neighbour list")
    return n


def _check_links(records: np.ndarray, capacity: int, n: int, path: Path) -> None:
    """Each row: a uint32 whose low 16 bits count the neighbours, then `capacity` uint32 ids."""
    words = np.ascontiguousarray(records).view("<u4")
    counts = words[:, 0] & 0xFFFF
    if (counts > capacity).any():
        raise DamagedIndex(f"{path.name}: a neighbour list is longer than the graph allows")
    used = np.arange(capacity)[None, :] < counts[:, None]
    if (words[:, 1:][used] >= n).any():
        raise DamagedIndex(f"{path.name}: a neighbour list points outside the index")
