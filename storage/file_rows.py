"""Stored vectors read from a `VectorIndex`'s file on disk (`os.preadv` into one array) instead of hnswlib.

hnswlib 0.8's `get_items` builds a Python float for every component before numpy sees them: ~12 µs of CPU per
384-d vector here, with the GIL held, whichever return type is asked for (2,000 history products, one consumer
batch: 24-26 ms). The file holds the same bytes hnswlib holds in memory (`save_index`'s layout, written by
`hnsw_file.write_state` from a memcpy of the graph), so a label the index has not changed since that copy is read
from the file: one `preadv` per vector straight into the answer's rows (~3 µs with its Python step). Labels changed
since (`changed`, kept by the index under its lock) are asked of hnswlib as before. The file is kept open, so a
save that renames a new file over it leaves this one readable until the index takes the new one. Reads, not a
memory map: a map would keep every page of the file it touched in the process's RSS (+165 MiB at 100k products).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from storage.hnsw_file import live_labels


class FileRows:
    """The vectors of one index file, by label; `changed`: labels whose vector in memory may differ from the file's
    (upserted or removed since the copy the file was written from), never read here."""

    def __init__(self, path: Path, dim: int, changed: set[int]) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        labels, rows, self._layout = live_labels(self._fd)
        order = np.argsort(labels, kind="stable")
        self._labels, self._rows = labels[order], rows[order]
        self.dim = dim
        self.changed = changed

    def take(self, ids: Sequence[int]) -> tuple[list[int], np.ndarray, list[int]]:
        """(the ids read from the file, their vectors (k, dim) float32, the other ids)."""
        asked = np.fromiter((i for i in ids if i not in self.changed), np.int64)
        if len(self._labels) == 0 or len(asked) == 0:
            return [], np.zeros((0, self.dim), np.float32), list(ids)
        at = np.minimum(np.searchsorted(self._labels, asked), len(self._labels) - 1)
        hit = self._labels[at] == asked
        found = asked[hit].tolist()
        if not found:
            return [], np.zeros((0, self.dim), np.float32), list(ids)
        out = np.empty((len(found), self.dim), np.float32)
        rows, width, layout = memoryview(out).cast("B"), 4 * self.dim, self._layout
        for k, row in enumerate(self._rows[at[hit]].tolist()):
            got = os.preadv(self._fd, [rows[k * width:(k + 1) * width]], layout.first_vector + row * layout.record)
            if got != width:
                raise OSError(f"index file: {got} of {width} bytes of a vector read")
        held = set(found)
        return found, out, [i for i in ids if i not in held]
