"""The neighbour lists on disk, beside the index (`<index path>.lists`), so a restart repairs them instead of
building them again (104 s of a core at 100k products quiet, 268 s under load).

The file holds the lists and, for every label the index held when they were saved, a fingerprint of its vector
(a 64-bit multiply-sum of the vector's bytes), plus the labels whose change the lists had not yet taken in. A
restart compares those fingerprints with the index as loaded: the labels added, removed or moved since (a log
replayed, a rebuild from DuckDB, a crash after the last save of the lists) are patched like any live change, so a
list never names a deleted product or ranks a product by its old vector. The index is the truth; the file only
saves the searches.

Layout: the SHA-256 of the rest, then an uncompressed `.npz` (no pickles). Written to `<path>.tmp`, synced, then
renamed: a crash mid-save leaves the previous file (or none). A missing, damaged or foreign file (another depth or
dimension, another format) reads as None: the lists are built from the index.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.vectors import VectorIndex

log = logging.getLogger("appliance.widgets")

FORMAT = 1
PRINT_CHUNK = 4096  # labels per fingerprint step (the index's lookup takes its lock LOOKUP_CHUNK at a time)


@dataclass(frozen=True)
class Saved:
    """Lists as saved: row r is the list of anchors[r] (ids, cosines, held length, whole); labels and prints: the
    index's vectors they were computed against; unknown: labels changed and not yet patched in when saved."""

    anchors: np.ndarray  # (R,) int64
    ids: np.ndarray  # (R, depth) int64
    cos: np.ndarray  # (R, depth) float32
    lengths: np.ndarray  # (R,) int64
    whole: np.ndarray  # (R,) bool
    labels: np.ndarray  # (L,) int64, sorted
    prints: np.ndarray  # (L,) uint64
    unknown: np.ndarray  # (U,) int64


def _multipliers(dim: int) -> np.ndarray:
    """Odd 64-bit multipliers, one per vector component, the same in every process and numpy version."""
    raw = np.frombuffer(hashlib.shake_128(b"appliance neighbour lists").digest(8 * dim), "<u8")
    return raw | np.uint64(1)


def fingerprints(index: VectorIndex) -> tuple[np.ndarray, np.ndarray]:
    """Every label the index holds (sorted) and its vector's fingerprint. A label removed meanwhile is left out.

    An odd multiplier per 32-bit word, summed modulo 2**64: a vector that changed in one word always changes
    its print (an odd number times a nonzero difference below 2**32 is never 0 modulo 2**64)."""
    k = _multipliers(index.dim)
    labels = np.sort(index.ids())
    out_labels, out_prints = [], []
    for start in range(0, len(labels), PRINT_CHUNK):
        found = index.lookup(labels[start:start + PRINT_CHUNK])
        if not found:
            continue
        vectors = np.stack(list(found.values())).astype(np.float32)  # (B, dim)
        out_labels.append(np.fromiter(found, np.int64, len(found)))
        out_prints.append((vectors.view(np.uint32).astype(np.uint64) * k).sum(axis=1, dtype=np.uint64))
    if not out_labels:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    return np.concatenate(out_labels), np.concatenate(out_prints)


def stale(saved: Saved, labels: np.ndarray, prints: np.ndarray) -> np.ndarray:
    """The labels whose vector is not the one the saved lists knew: added, removed or moved since, or unknown
    then."""
    both = np.union1d(saved.labels, labels)
    then, now = np.zeros(len(both), np.uint64), np.zeros(len(both), np.uint64)
    had, has = np.zeros(len(both), bool), np.zeros(len(both), bool)
    at = np.searchsorted(both, saved.labels)
    then[at], had[at] = saved.prints, True
    at = np.searchsorted(both, labels)
    now[at], has[at] = prints, True
    return np.union1d(both[(had != has) | (then != now)], saved.unknown)


def write(path: Path, saved: Saved, depth: int, dim: int) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, format=np.array([FORMAT, depth, dim], np.int64), anchors=saved.anchors, ids=saved.ids,
             cos=saved.cos, lengths=saved.lengths, whole=saved.whole, labels=saved.labels, prints=saved.prints,
             unknown=saved.unknown)
    body = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(hashlib.sha256(body).digest())
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path, depth: int, dim: int) -> Saved | None:
    """The saved lists, or None (logged why) when the file is missing, damaged or for another depth or dim."""
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)  # a save that did not finish
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        if len(raw) < 32 or hashlib.sha256(raw[32:]).digest() != raw[:32]:
            raise ValueError("its SHA-256 does not match")
        with np.load(io.BytesIO(raw[32:]), allow_pickle=False) as z:
            fmt = z["format"].tolist()
            if fmt != [FORMAT, depth, dim]:
                raise ValueError(f"format, depth, dim {fmt}, not {[FORMAT, depth, dim]}")
            saved = Saved(*(np.array(z[name]) for name in (
                "anchors", "ids", "cos", "lengths", "whole", "labels", "prints", "unknown")))
        rows = len(saved.anchors)
        if saved.ids.shape != (rows, depth) or saved.cos.shape != (rows, depth) or saved.lengths.shape != (rows,) \
                or saved.whole.shape != (rows,) or saved.labels.shape != saved.prints.shape \
                or ((saved.lengths < 0) | (saved.lengths > depth)).any():
            raise ValueError("its arrays do not fit together")
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # np.load's errors on a bad zip
        log.warning("neighbour lists in %s not used (%s): built from the index", path.name, exc)
        return None
    return saved
