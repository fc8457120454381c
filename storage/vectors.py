"""An hnswlib vector index (cosine) kept in step with DuckDB; its files are `storage.vector_files`' concern."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import hnswlib
import numpy as np

from appliance.config_sections import IndexConfig
from storage.file_rows import FileRows
from storage.vector_files import IndexFiles

LOOKUP_CHUNK = 64  # vectors per get_items call in lookup: < 1 ms of GIL each
# upsert adds in pieces sized to hold the lock about this long each (from the previous piece's time per vector)
ADD_HOLD_SECONDS = 0.005
ADD_PIECE_FIRST = 8  # vectors in the first piece
ADD_PIECE_MAX = 1024
# hnswlib adds `rows <= 4 * num_threads` on one thread: a piece on several threads holds at least one more
HNSWLIB_SERIAL_ROWS_PER_THREAD = 4


def parallel_piece(threads: int) -> int:
    """The fewest vectors a piece of `upsert` holds: enough for hnswlib to use `threads` (one when 1). Pieces sized
    by time alone shrank below that once a vector took over 0.6 ms (a 1M index: 1.2 ms), and every piece then ran
    on one thread, whatever the caller asked, at about twice the time of two."""
    return HNSWLIB_SERIAL_ROWS_PER_THREAD * threads + 1 if threads > 1 else 1


class VectorIndex(IndexFiles):
    """Labels are product (or customer) ids. Thread-safe: one lock around every call into hnswlib, held for one
    piece of a large upsert at a time. Loaded from and saved to its files by `IndexFiles`.
    """

    def __init__(self, path: Path, dim: int, config: IndexConfig) -> None:
        self.path = Path(path)
        self.log_path = Path(f"{path}.log")
        self.dim = dim
        self.config = config
        self.synced_until: datetime | None = None
        self._lock = threading.RLock()
        self._saving = threading.Lock()
        self._deleted: set[int] = set()
        self._dirty = False
        self._index = self._empty(1024)
        self._whole = True  # the next save writes the file whole (nothing on disk to append to)
        self._base_sha = ""  # SHA-256 of the file on disk, which the log follows
        self._pending: dict[int, np.ndarray | None] = {}  # changed since the last save: vector, None if removed
        self._logged = 0  # labels in the log's records
        self.version = 0  # bumped by every change of the contents (caches of neighbours compare it)
        self.on_change: Callable[[np.ndarray | None], None] | None = None  # told the changed labels, under the lock
        self._rows: FileRows | None = None  # the vectors of the file on disk, for the labels unchanged since
        self._copying: set[int] | None = None  # labels changed since a save began copying (the next file's)

    def _empty(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space=self.config.space, dim=self.dim)
        index.init_index(
            max_elements=capacity, ef_construction=self.config.ef_construction, M=self.config.m,
            random_seed=100, allow_replace_deleted=True,
        )
        index.set_ef(self.config.ef_search)
        index.set_num_threads(1)
        return index

    def twin(self) -> VectorIndex:
        """An empty index with this one's path and settings, to be filled aside and `adopt`ed."""
        return VectorIndex(self.path, self.dim, self.config)

    def adopt(self, fresh: VectorIndex) -> None:
        """Take the contents of `fresh` (a `twin` filled aside) in place of this index's; the next save writes the
        file whole (the log on disk follows the old file)."""
        with self._lock, fresh._lock:
            self._index, self._deleted, self.synced_until = fresh._index, fresh._deleted, fresh.synced_until
            self._dirty, self._whole, self._pending = True, True, {}
            self._rows = self._copying = None  # the file on disk (and one being written) holds other contents
            self.version += 1
            self._changed_all()  # what `fresh` took in beyond this index's contents was never told to `on_change`

    def reset(self) -> None:
        with self._lock:
            self._index = self._empty(1024)
            self._deleted = set()
            self.synced_until = None
            self._dirty, self._whole, self._pending = True, True, {}
            self._rows = self._copying = None
            self.version += 1
            self._changed_all()

    def _changed_all(self) -> None:
        if self.on_change is not None:
            self.on_change(None)

    # -- contents ----------------------------------------------------------------------------------------
    def upsert(self, ids: np.ndarray, vectors: np.ndarray, threads: int = 1) -> None:
        """Add or replace vectors (N, dim) under labels ids (N,), on `threads` threads; a label that already holds
        the same vector is left alone (re-inserting it would repair its graph links for nothing: a product edit
        that keeps its text keeps its vector).

        Added in pieces of about ADD_HOLD_SECONDS of hnswlib work each, the lock released between them: a query
        waits for one piece, not for the call (2,048 adds to a 48k index held it 20.6 s under load). Each piece is
        noted, counted in `version` and told to `on_change` on its own; a save between two pieces writes those
        before it (the caller moves `synced_until` only once all are in)."""
        if len(ids) == 0:
            return
        ids, vectors = self._changed(np.asarray(ids, dtype=np.int64), np.asarray(vectors, dtype=np.float32))
        start, piece = 0, max(ADD_PIECE_FIRST, parallel_piece(threads))
        while start < len(ids):
            t0 = time.perf_counter()
            self._add(ids[start:start + piece], vectors[start:start + piece], threads, len(ids) - start)
            per_vector = (time.perf_counter() - t0) / min(piece, len(ids) - start)
            start += piece
            # lets a thread woken by the release take the lock before this one takes it back for the next piece
            # (in process, 48k + 2,048 adds: a lookup's p50 during them 4.0 -> 0.9 ms, max 562 -> 121)
            time.sleep(0)
            piece = max(parallel_piece(threads), min(ADD_PIECE_MAX, int(ADD_HOLD_SECONDS / max(per_vector, 1e-9))))

    def _add(self, ids: np.ndarray, vectors: np.ndarray, threads: int, coming: int) -> None:
        """One piece of `upsert`, under the lock; room is made for the `coming` labels of the call at once."""
        with self._lock:
            needed = len(self) + coming + len(self._deleted)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            revived = [int(i) for i in ids if int(i) in self._deleted]
            for label in revived:
                self._index.unmark_deleted(label)
                self._deleted.discard(label)
            self._index.add_items(vectors, ids, num_threads=threads)
            self._mark(ids)
            self._note(ids, vectors)
            self._dirty = True
            self.version += 1
            if self.on_change is not None:
                self.on_change(ids)

    def _changed(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        held = self.lookup(ids) if len(self) else {}
        if not held:
            return ids, vectors
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        unit = vectors / norms if self.config.space == "cosine" else vectors  # cosine stores unit vectors
        same = np.array([int(i) in held and np.allclose(held[int(i)], v, atol=1e-6) for i, v in zip(ids, unit,
                                                                                                      strict=True)])
        return ids[~same], vectors[~same]

    def remove(self, ids: np.ndarray) -> int:
        with self._lock:
            removed = 0
            for label in (int(i) for i in ids):
                if label in self._deleted or not self._has(label):
                    continue
                self._index.mark_deleted(label)
                self._deleted.add(label)
                self._mark([label])
                self._note([label], None)
                removed += 1
            self._dirty = self._dirty or removed > 0
            self.version += removed > 0
            if removed and self.on_change is not None:
                self.on_change(np.asarray(ids, np.int64))
        return removed

    def _mark(self, ids: np.ndarray | list[int]) -> None:
        """Under the lock: these labels' vectors in memory may now differ from the files' (read from hnswlib)."""
        for marks in (None if self._rows is None else self._rows.changed, self._copying):
            if marks is not None:
                marks.update(int(i) for i in ids)

    def _has(self, label: int) -> bool:
        try:
            self._index.get_items([label])
        except RuntimeError:
            return False
        return True

    def ids(self) -> np.ndarray:
        with self._lock:
            labels = np.asarray(self._index.get_ids_list(), dtype=np.int64)
        return np.setdiff1d(labels, np.fromiter(self._deleted, np.int64, len(self._deleted)))

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of `ids` (N, dim); raises KeyError for an id the index does not hold."""
        with self._lock:
            missing = [int(i) for i in ids if int(i) in self._deleted or not self._has(int(i))]
            if missing:
                raise KeyError(missing[:10])
            return np.asarray(self._index.get_items(np.asarray(ids, dtype=np.int64)), dtype=np.float32)

    def lookup(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        """Stored vectors of those `ids` the index holds (the others are left out). Those unchanged since the file
        on disk was copied are read from that file (`FileRows`: ~3 µs per vector against ~12 µs
        through hnswlib); the others from hnswlib in chunks of LOOKUP_CHUNK: its get_items holds the GIL while it
        builds Python floats, and the consumer's 2,000 history products in one call held it 38-45 ms at 100k
        products (32 calls: 18 ms in all, < 1 ms each)."""
        with self._lock:
            wanted = [int(i) for i in ids if int(i) not in self._deleted]
            rows = self._rows
        out: dict[int, np.ndarray] = {}
        if rows is not None:
            found, vectors, wanted = rows.take(wanted)
            out.update(zip(found, vectors, strict=True))
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start:start + LOOKUP_CHUNK]
            with self._lock:
                try:  # one call when all are present (the usual case), one per id otherwise
                    vectors = self._index.get_items(chunk)
                except RuntimeError:
                    chunk = [i for i in chunk if i not in self._deleted and self._has(i)]
                    vectors = self._index.get_items(chunk) if chunk else []
            out.update(zip(chunk, np.asarray(vectors, dtype=np.float32), strict=True))
        return out

    def __len__(self) -> int:
        with self._lock:
            return self._index.get_current_count() - len(self._deleted)

    @property
    def deleted(self) -> int:
        return len(self._deleted)

    def query(
        self, vector: np.ndarray, k: int, accept: Callable[[int], bool] | None = None, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest labels to `vector` and their cosine similarities, best first; searched with `ef`
        (default `index.ef_search`), raised to k when smaller."""
        vector = np.asarray(vector, dtype=np.float32)
        with self._lock:
            k = min(k, len(self))
            if k <= 0:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            self._index.set_ef(max(self.config.ef_search if ef is None else ef, k))
            try:
                labels, distances = self._index.knn_query(vector, k=k, filter=accept)
            except RuntimeError:  # the filter left fewer than k: the graph search cannot fill k places
                return self._exact(vector, k, accept)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def query_many(self, vectors: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest labels of each of `vectors` (m, dim) and their cosines (m, k), best first, in one batched
        search (fewer than k columns when the index holds fewer); `ef` as in `query`."""
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            k = min(k, len(self))
            if k > 0:
                self._index.set_ef(max(self.config.ef_search if ef is None else ef, k))
                try:
                    labels, distances = self._index.knn_query(vectors, k=k)
                    return labels.astype(np.int64), (1.0 - distances).astype(np.float32)
                except RuntimeError:  # deleted labels left one search short: each on its own (with its fallback)
                    pass
        if k <= 0:
            return np.zeros((len(vectors), 0), np.int64), np.zeros((len(vectors), 0), np.float32)
        found = [self.query(v, k, ef=ef) for v in vectors]
        return np.stack([f[0] for f in found]), np.stack([f[1] for f in found])

    def _exact(self, vector: np.ndarray, k: int, accept: Callable[[int], bool] | None) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force cosine over every accepted stored vector (what a search that cannot fill k falls back to)."""
        ids = self.ids()
        if accept is not None:
            ids = ids[[accept(int(i)) for i in ids]] if len(ids) else ids
        if len(ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        stored = np.asarray(self._index.get_items(ids), dtype=np.float32)
        sims = stored @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
        top = np.argsort(-sims, kind="stable")[:k]
        return ids[top], sims[top].astype(np.float32)
