"""Stored vectors read from a `VectorIndex`'s file on disk (a read-only memory map) instead of hnswlib.

hnswlib 0.8's `get_items` builds a Python float for every component before numpy sees them: ~12 µs of CPU per
384-d vector here, with the GIL held, whichever return type is asked for (2,000 history products, one consumer
batch: 24-26 ms). The file holds the same bytes hnswlib holds in memory (`save_index`'s layout, written by
`hnsw_file.write_state` from a memcpy of the graph), so a label the index has not changed since that copy is read
from the map: a numpy gather of its row. Labels changed since (`changed`, kept by the index under its lock) are
asked of hnswlib as before. The map's pages are the file's page cache: shared and reclaimable, not the heap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from storage.hnsw_file import vector_rows


class FileRows:
    """The vectors of one index file, by label; `changed`: labels whose vector in memory may differ from the file's
    (upserted or removed since the copy the file was written from), never read here."""

    def __init__(self, path: Path, dim: int, changed: set[int]) -> None:
        labels, rows, self._vectors = vector_rows(path, dim)
        order = np.argsort(labels, kind="stable")
        self._labels, self._rows = labels[order], rows[order]
        self.changed = changed

    def take(self, ids: Sequence[int]) -> tuple[list[int], np.ndarray, list[int]]:
        """(the ids read from the file, their vectors (k, dim) float32 copied out of the map, the other ids)."""
        asked = np.fromiter((i for i in ids if i not in self.changed), np.int64)
        if len(self._labels) == 0 or len(asked) == 0:
            return [], np.zeros((0, self._vectors.shape[1]), np.float32), list(ids)
        at = np.minimum(np.searchsorted(self._labels, asked), len(self._labels) - 1)
        hit = self._labels[at] == asked
        found = asked[hit].tolist()
        vectors = self._vectors[self._rows[at[hit]]]  # a gather: a copy, the map's pages read once
        held = set(found)
        return found, vectors, [i for i in ids if i not in held]
