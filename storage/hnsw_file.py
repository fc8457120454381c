"""The hnswlib index file: written from the index's pickled state, and checked before hnswlib reads it
(hnswlib trusts its input: a damaged neighbour list crashes the process on the first query, random bytes raise
OverflowError or allocate absurd sizes).

`write_state` writes the file hnswlib's `save_index` writes, byte for byte, from the arrays of `Index.__getstate__`
(`save_index` holds the GIL for the whole write: 2.9 s at 100k products; the copy into those arrays is a memcpy,
and Python's writes and hash updates release the GIL). `digest` is recorded in the sidecar when the file is
written and compared before it is loaded; `check_structure` is a walk, in numpy over the file's memory map, of
the layout written by hnswlib 0.8 (`HierarchicalNSW::saveIndex`):

    header (96 bytes): offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset,
                       offsetData (size_t each), maxlevel (int32), enterpoint_node (uint32), maxM, maxM0, M
                       (size_t), mult (double), ef_construction (size_t)
    level 0, one record per element: link count (low 16 bits of a uint32; a deleted mark in byte 2),
                       maxM0 neighbour ids (uint32), the vector (dim float32), the label (size_t)
    upper levels, per element: a uint32 byte size, then that many bytes of (count, maxM ids) records
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = np.dtype([
    ("offset_level0", "<u8"), ("max_elements", "<u8"), ("count", "<u8"), ("size_per_element", "<u8"),
    ("label_offset", "<u8"), ("offset_data", "<u8"), ("max_level", "<i4"), ("entry_point", "<u4"),
    ("max_m", "<u8"), ("max_m0", "<u8"), ("m", "<u8"), ("mult", "<f8"), ("ef_construction", "<u8"),
])

# the header's fields as `Index.__getstate__` names them
STATE_KEYS = {
    "offset_level0": "offset_level0", "max_elements": "max_elements", "count": "cur_element_count",
    "size_per_element": "size_data_per_element", "label_offset": "label_offset", "offset_data": "offset_data",
    "max_level": "max_level", "entry_point": "enterpoint_node", "max_m": "max_M", "max_m0": "max_M0", "m": "M",
    "mult": "mult", "ef_construction": "ef_construction",
}

BLOCK = 65_536  # vectors checked at a time
DELETE_MARK = 0x01  # hnswlib's DELETE_MARK, in byte 2 of an element's level-0 link count
WRITE_CHUNK = 4 << 20  # bytes per write and hash update: each releases the GIL, so other threads run in between


class DamagedIndex(ValueError):
    """The file is not the index its sidecar describes, or not a well-formed hnswlib index."""


def digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_state(path: Path, state: dict) -> tuple[int, str]:
    """Write the index file of `state` (the dict of `hnswlib.Index.__getstate__()[0]`) to `path`, synced to disk;
    returns its size and SHA-256.

    The layout of `save_index`: the header, the level-0 records (`data_level0`, copied as they are), then per
    element a uint32 byte size and its upper-level lists (`link_lists` holds them back to back, in element order)."""
    header = np.zeros(1, HEADER)
    for field, key in STATE_KEYS.items():
        header[field] = state[key]
    n = int(state["cur_element_count"])
    levels = np.asarray(state["element_levels"][:n], dtype=np.int64)
    sizes = np.where(levels > 0, levels * int(state["size_links_per_element"]), 0)  # (n,) bytes, 4-byte multiples
    words = np.empty(n + int(sizes.sum()) // 4, "<u4")  # (n + link words,): each size word, then its lists
    at = np.arange(n, dtype=np.int64) + np.cumsum(sizes // 4) - sizes // 4  # where each size word goes
    links = np.ones(len(words), bool)
    links[at] = False
    words[at] = sizes
    words[links] = np.asarray(state["link_lists"]).view("<u4")
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        for part in (header.tobytes(), np.asarray(state["data_level0"]), words):
            view = memoryview(part).cast("B")
            for start in range(0, len(view), WRITE_CHUNK):
                chunk = view[start:start + WRITE_CHUNK]
                sha.update(chunk)
                f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    return size, sha.hexdigest()


def check_structure(path: Path, dim: int, normalised: bool) -> int:
    """Raise DamagedIndex unless the file is a well-formed index of `dim`-d vectors; returns its element count.

    Checks the header's sizes against each other and the file length, every neighbour id against the element
    count, and (cosine space, where hnswlib stores unit vectors) that every vector is finite and unit length."""
    # a plain ndarray over the map: slicing a np.memmap costs microseconds each
    raw = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray) if path.stat().st_size else np.zeros(0, np.uint8)
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
    level0 = raw[HEADER.itemsize:end0].reshape(n, size)  # (n, size) bytes; size and the header are 4-byte multiples
    _check_links(level0[:, :links0].view("<u4"), m0, n, path)  # views of the rows' columns: nothing is copied
    for block in range(0, n, BLOCK):  # a block at a time bounds the temporaries
        vectors = level0[block:block + BLOCK, links0:links0 + 4 * dim].view("<f4")  # (B, dim)
        if not np.isfinite(vectors).all():
            raise DamagedIndex(f"{path.name}: a stored vector is not finite")
        if normalised and np.abs(np.einsum("ij,ij->i", vectors, vectors) - 1.0).max() > 2e-3:
            raise DamagedIndex(f"{path.name}: a stored vector is not unit length")
    _check_upper_levels(raw, end0, n, m, max(int(h["max_level"]), 0), path)
    return n


def live_labels(fd: int, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, Layout]:
    """The labels (k,) of the elements of a (checked) index file open at `fd` that are not marked deleted, their
    record numbers (k,), and where each record's vector lies: read `chunk` records at a time (no memory map, so
    no page of the file stays in this process's RSS; the layout as `check_structure` reads it)."""
    h = np.frombuffer(os.pread(fd, HEADER.itemsize, 0), HEADER)[0]
    n, size = int(h["count"]), int(h["size_per_element"])
    layout = Layout(HEADER.itemsize + int(h["offset_data"]), size)
    labels, rows = [], []
    for first in range(0, n, chunk):
        count = min(chunk, n - first)
        records = np.frombuffer(os.pread(fd, count * size, HEADER.itemsize + first * size), np.uint8)
        records = records.reshape(count, size)
        live = np.flatnonzero((records[:, 2] & DELETE_MARK) == 0)  # hnswlib's deleted mark: the link count's byte 2
        label = int(h["label_offset"])
        labels.append(records[live, label:label + 8].copy().view("<u8")[:, 0].astype(np.int64))
        rows.append(live + first)
    empty = np.zeros(0, np.int64)
    return (np.concatenate(labels) if labels else empty), (np.concatenate(rows) if rows else empty), layout


@dataclass(frozen=True)
class Layout:
    first_vector: int  # the byte offset of record 0's vector
    record: int  # bytes per level-0 record


def _check_upper_levels(raw: np.ndarray, start: int, n: int, m: int, max_level: int, path: Path) -> None:
    """The upper levels from byte `start` to the end of the file: per element a uint32 byte size (0 for the
    ~(M-1)/M elements that live on level 0 only), then that many bytes of (count, m ids) records.

    Only the elements with upper levels cost a Python step: the run of zero sizes before the next one is found
    by a search in the positions of the nonzero words."""
    tail = len(raw) - start
    if tail % 4:
        raise DamagedIndex(f"{path.name}: the upper levels are not whole 4-byte words")
    words = raw[start:].view("<u4")  # (tail / 4,)
    nonzero = np.flatnonzero(words)
    record = 1 + m  # words per (count, ids) record
    at, seen, starts, lengths = 0, 0, [], []
    while seen < n:
        i = int(np.searchsorted(nonzero, at))
        nxt = int(nonzero[i]) if i < len(nonzero) else len(words)
        if nxt - at >= n - seen:  # every element left has no upper level
            at += n - seen
            break
        if nxt == len(words):
            raise DamagedIndex(f"{path.name}: truncated in the upper levels")
        seen += nxt - at + 1
        nbytes = int(words[nxt])
        if nbytes % (4 * record) or nbytes // (4 * record) > max_level or nxt + 1 + nbytes // 4 > len(words):
            raise DamagedIndex(f"{path.name}: an upper-level neighbour list has a bad size")
        starts.append(nxt + 1)
        lengths.append(nbytes // 4)
        at = nxt + 1 + nbytes // 4
    if at > len(words):
        raise DamagedIndex(f"{path.name}: truncated in the upper levels")
    if at != len(words):
        raise DamagedIndex(f"{path.name}: {4 * (len(words) - at)} bytes after the last neighbour list")
    if starts:
        counts = np.asarray(lengths)
        first = np.repeat(np.asarray(starts) - (np.cumsum(counts) - counts), counts)  # gather: every list word
        lists = words[first + np.arange(int(counts.sum()))].reshape(-1, record)
        _check_links(lists, m, n, path)


def _check_links(words: np.ndarray, capacity: int, n: int, path: Path) -> None:
    """Each row (uint32 words): the low 16 bits of the first count the neighbours, then `capacity` ids."""
    counts = words[:, 0] & 0xFFFF
    if (counts > capacity).any():
        raise DamagedIndex(f"{path.name}: a neighbour list is longer than the graph allows")
    used = np.arange(capacity)[None, :] < counts[:, None]
    if (words[:, 1:][used] >= n).any():
        raise DamagedIndex(f"{path.name}: a neighbour list points outside the index")
