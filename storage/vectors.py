"""An hnswlib vector index (cosine) persisted atomically, with the bookkeeping to stay in step with DuckDB."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import hnswlib
import numpy as np

from appliance.config_sections import IndexConfig
from storage.hnsw_file import DamagedIndex, check_structure, digest

SIDECAR_FORMAT = 2  # 2: with the file's size, SHA-256 and element count
LOOKUP_CHUNK = 64  # vectors per get_items call in lookup: < 1 ms of GIL each


class VectorIndex:
    """Labels are product (or customer) ids. Thread-safe: one lock around every call into hnswlib.

    On disk: `<path>` (hnswlib binary) and `<path>.json` (dim, space, element count, the binary's size and
    SHA-256, deleted labels, synced_until), each written to a temp file then renamed, the binary first: a crash
    between the two leaves a sidecar that does not match, and the next start rebuilds the index from DuckDB.
    """

    def __init__(self, path: Path, dim: int, config: IndexConfig) -> None:
        self.path = Path(path)
        self.dim = dim
        self.config = config
        self.synced_until: datetime | None = None
        self._lock = threading.RLock()
        self._deleted: set[int] = set()
        self._dirty = False
        self._index = self._empty(1024)
        self.version = 0  # bumped by every change of the contents (caches of neighbours compare it)

    def _empty(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space=self.config.space, dim=self.dim)
        index.init_index(
            max_elements=capacity, ef_construction=self.config.ef_construction, M=self.config.m,
            random_seed=100, allow_replace_deleted=True,
        )
        index.set_ef(self.config.ef_search)
        index.set_num_threads(1)
        return index

    # -- persistence -------------------------------------------------------------------------------------
    def load(self) -> str | None:
        """Read the index from disk, verified first; None when loaded, else why not (and an empty index).

        The file must match the sidecar written with it (size, SHA-256, element count, dim, space) and be
        well-formed (`hnsw_file.check_structure`) before hnswlib reads it: hnswlib trusts its input."""
        with self._lock:
            try:
                meta = self._verified_meta()
                index = hnswlib.Index(space=self.config.space, dim=self.dim)
                index.load_index(str(self.path), allow_replace_deleted=True)
                if index.get_current_count() != meta["count"]:
                    raise DamagedIndex(f"hnswlib read {index.get_current_count()} elements, not {meta['count']}")
                deleted = {int(i) for i in meta["deleted"]}
                synced = datetime.fromisoformat(meta["synced_until"]) if meta["synced_until"] else None
            except FileNotFoundError as exc:
                self.reset()
                return f"{Path(exc.filename).name} is missing"
            except (OSError, ValueError, KeyError, TypeError, RuntimeError, OverflowError, MemoryError) as exc:
                self.reset()
                return f"{type(exc).__name__}: {exc}"
            index.set_ef(self.config.ef_search)
            index.set_num_threads(1)
            self._index = index
            self._deleted = deleted
            self.synced_until = synced
            self._dirty = False
            self.version += 1
            return None

    def _verified_meta(self) -> dict:
        meta = json.loads(Path(f"{self.path}.json").read_text())
        if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
            raise DamagedIndex("the sidecar is from an older version or not a sidecar")
        if meta["dim"] != self.dim or meta["space"] != self.config.space:
            raise DamagedIndex("index was built for another dimension or space")
        size = self.path.stat().st_size
        if size != meta["bytes"] or digest(self.path) != meta["sha256"]:
            raise DamagedIndex(f"{self.path.name} does not match its sidecar's size and SHA-256")
        count = check_structure(self.path, self.dim, normalised=self.config.space == "cosine")
        if count != meta["count"]:
            raise DamagedIndex(f"{self.path.name} holds {count} elements, its sidecar says {meta['count']}")
        return meta

    def save(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            self._index.save_index(str(tmp))
            meta = {
                "format": SIDECAR_FORMAT, "dim": self.dim, "space": self.config.space,
                "count": self._index.get_current_count(), "bytes": tmp.stat().st_size, "sha256": digest(tmp),
                "deleted": sorted(self._deleted),
                "synced_until": self.synced_until.isoformat() if self.synced_until else None,
            }
            os.replace(tmp, self.path)
            tmp_meta = Path(f"{self.path}.json.tmp")
            tmp_meta.write_text(json.dumps(meta))
            os.replace(tmp_meta, f"{self.path}.json")
            self._dirty = False

    def save_if_dirty(self) -> bool:
        with self._lock:
            if self._dirty:
                self.save()
                return True
            return False

    def reset(self) -> None:
        with self._lock:
            self._index = self._empty(1024)
            self._deleted = set()
            self.synced_until = None
            self._dirty = True
            self.version += 1

    # -- contents ----------------------------------------------------------------------------------------
    def upsert(self, ids: np.ndarray, vectors: np.ndarray, threads: int = 1) -> None:
        """Add or replace vectors (N, dim) under labels ids (N,), on `threads` threads; a label that already holds
        the same vector is left alone (re-inserting it would repair its graph links for nothing: a product edit
        that keeps its text keeps its vector)."""
        if len(ids) == 0:
            return
        ids, vectors = self._changed(np.asarray(ids, dtype=np.int64), np.asarray(vectors, dtype=np.float32))
        if len(ids) == 0:
            return
        with self._lock:
            needed = len(self) + len(ids) + len(self._deleted)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            revived = [int(i) for i in ids if int(i) in self._deleted]
            for label in revived:
                self._index.unmark_deleted(label)
                self._deleted.discard(label)
            self._index.add_items(np.asarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64),
                                  num_threads=threads)
            self._dirty = True
            self.version += 1

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
                removed += 1
            self._dirty = self._dirty or removed > 0
            self.version += removed > 0
            return removed

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
        """Stored vectors of those `ids` the index holds (the others are left out). Asked for in chunks of
        LOOKUP_CHUNK: hnswlib's get_items holds the GIL while it builds Python floats, and the consumer's 2,000
        history products in one call held it 38-45 ms at 100k products (32 calls: 18 ms in all, < 1 ms each)."""
        out: dict[int, np.ndarray] = {}
        with self._lock:
            wanted = [int(i) for i in ids if int(i) not in self._deleted]
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
