"""An append-only log of the changes made to an hnswlib index since its file was last written whole.

A whole write copies the graph under the GIL (`VectorIndex.save`: 0.1-0.6 s per 100k vectors); a log record
holds only what changed, so the saves made while serving append here. The index file is written whole at
shutdown; a log past a share of the index (its replay at start-up costs hnswlib inserts) is folded into the file
by another process (`storage.hnsw_fold`).

`<index>.log`: a header (magic, the SHA-256 of the index file the log follows, dim), then records, each appended
in one write and synced: a record header (magic, upserted count, removed count, length of synced_until), the
synced_until text, the removed labels (int64), the upserted labels (int64) and vectors (float32 rows), and a
CRC-32 of all of it. A record cut short by a crash fails its length or CRC: it and what follows are dropped, and
the changes it held come back from DuckDB (they are newer than the synced_until of the record before it).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"HNSWLOG1"
HEADER = struct.Struct("<8s32sI")  # magic, SHA-256 of the index file, dim
RECORD = struct.Struct("<4sIII")  # magic, upserted, removed, bytes of synced_until
RECORD_MAGIC = b"REC1"
CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Change:
    synced_until: str | None
    removed: np.ndarray  # (R,) int64 labels
    ids: np.ndarray  # (N,) int64 labels
    vectors: np.ndarray  # (N, dim) float32


def append(path: Path, base_sha: str, dim: int, change: Change) -> None:
    """Append one record (the header first when the log is new), synced to disk before returning."""
    synced = (change.synced_until or "").encode()
    body = b"".join([
        RECORD.pack(RECORD_MAGIC, len(change.ids), len(change.removed), len(synced)), synced,
        np.asarray(change.removed, "<i8").tobytes(), np.asarray(change.ids, "<i8").tobytes(),
        np.asarray(change.vectors, "<f4").reshape(len(change.ids), dim).tobytes(),
    ])
    with open(path, "ab") as f:
        if f.tell() == 0:
            f.write(HEADER.pack(MAGIC, bytes.fromhex(base_sha), dim))
        f.write(body + CRC.pack(zlib.crc32(body)))
        f.flush()
        os.fsync(f.fileno())


def read(path: Path, base_sha: str, dim: int) -> tuple[list[Change], int] | None:
    """The records of the log that follows the index file `base_sha`, up to the first damaged one, and the
    length of the good part; None when there is no log or it follows another file (or its header is torn)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) < HEADER.size or HEADER.unpack_from(raw) != (MAGIC, bytes.fromhex(base_sha), dim):
        return None
    changes, at = [], HEADER.size
    while at + RECORD.size <= len(raw):
        magic, n, r, s = RECORD.unpack_from(raw, at)
        end = at + RECORD.size + s + 8 * r + 8 * n + 4 * dim * n
        if magic != RECORD_MAGIC or end + CRC.size > len(raw) \
                or CRC.unpack_from(raw, end)[0] != zlib.crc32(raw[at:end]):
            break
        p = at + RECORD.size
        synced = raw[p:p + s].decode() or None
        p += s
        removed = np.frombuffer(raw, "<i8", r, p).astype(np.int64)
        ids = np.frombuffer(raw, "<i8", n, p + 8 * r).astype(np.int64)
        vectors = np.frombuffer(raw, "<f4", n * dim, p + 8 * r + 8 * n).reshape(n, dim).astype(np.float32)
        changes.append(Change(synced, removed, ids, vectors))
        at = end + CRC.size
    return changes, at
