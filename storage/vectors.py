"""An hnswlib vector index (cosine) persisted atomically, with the bookkeeping to stay in step with DuckDB."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import hnswlib
import numpy as np

from appliance.config_sections import IndexConfig
from storage import hnsw_log
from storage.hnsw_file import DamagedIndex, check_structure, digest, write_state

SIDECAR_FORMAT = 2  # 2: with the file's size, SHA-256 and element count
LOOKUP_CHUNK = 64  # vectors per get_items call in lookup: < 1 ms of GIL each
LOG_SHARE = 0.1  # a log holding more labels than this share of the index (or LOG_MIN) is folded into the file
LOG_MIN = 10_000


class VectorIndex:
    """Labels are product (or customer) ids. Thread-safe: one lock around every call into hnswlib.

    On disk: `<path>` (hnswlib binary) and `<path>.json` (dim, space, element count, the binary's size and
    SHA-256, deleted labels, synced_until), both written to temp files, then renamed, the binary first: a crash
    before its rename leaves the previous pair; between the renames, the new binary and the new sidecar still
    at `<path>.json.tmp`, which `load` takes when `<path>.json` does not describe the binary. Saves between two
    whole writes append the changes to `<path>.log` (`storage.hnsw_log`), which `load` replays, and which another
    process folds into the file once it passes LOG_SHARE of the index (`storage.hnsw_fold`).
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
        self.on_change: Callable[[np.ndarray | None], None] | None = None  # told the labels changed (None: all)

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
        """Read the index from disk, verified first, then replay its log; None when loaded, else why not (and
        an empty index).

        The file must match the sidecar written with it (size, SHA-256, element count, dim, space) and be
        well-formed (`hnsw_file.check_structure`) before hnswlib reads it: hnswlib trusts its input."""
        with self._lock:
            Path(f"{self.path}.fold").unlink(missing_ok=True)  # left by a fold whose server died meanwhile
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
            self._base_sha, self._whole = meta["sha256"], False
            self._replay()
            self._dirty = False
            self.version += 1
        self._changed_all()
        return None

    def _replay(self) -> None:
        """Apply the log's records in order (all cores: hnswlib inserts); cut a torn tail off, drop a log that
        follows another file."""
        found = hnsw_log.read(self.log_path, self._base_sha, self.dim)
        if found is None:
            self.log_path.unlink(missing_ok=True)
            return
        changes, good = found
        if good < self.log_path.stat().st_size:
            os.truncate(self.log_path, good)
        for change in changes:
            self.remove(change.removed)
            self.upsert(change.ids, change.vectors, threads=os.cpu_count() or 1)
            self.synced_until = datetime.fromisoformat(change.synced_until) if change.synced_until else None
        self._pending.clear()
        self._logged = sum(len(c.ids) + len(c.removed) for c in changes)

    def _verified_meta(self) -> dict:
        try:
            return self._meta_from(Path(f"{self.path}.json"))
        except DamagedIndex:  # a save stopped between its renames: the binary's sidecar is still the temp file
            if not Path(f"{self.path}.json.tmp").exists():
                raise
            return self._meta_from(Path(f"{self.path}.json.tmp"))

    def _meta_from(self, sidecar: Path) -> dict:
        meta = json.loads(sidecar.read_text())
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

    def save(self, whole: bool = False) -> None:
        """Persist the index without holding the GIL for a write: append the changes since the last save to the
        log; with a log past LOG_SHARE of the index, then fold it into the file in another process
        (`storage.hnsw_fold`); write the file whole here when asked (`whole`) or when nothing is on disk yet.

        A whole write takes a copy of the graph under the lock (`__getstate__`, a memcpy of hnswlib's arrays,
        the GIL held: hnswlib's own `save_index` held it for the whole write, 2.9 s at 100k products) and writes
        the file from it (`hnsw_file.write_state`, whose writes release the GIL) while queries and changes go on.
        A change made meanwhile leaves the index dirty for the next save. Binary, then sidecar: see the class."""
        with self._saving:  # one save at a time: the background indexer's, the reindex job's, shutdown's
            with self._lock:
                synced = self.synced_until.isoformat() if self.synced_until else None
                whole = whole or self._whole
                fold = not whole and self._logged + len(self._pending) > max(LOG_MIN, LOG_SHARE * len(self))
                pending, self._pending = self._pending, {}
                self._dirty = False
                # changes made from here on are kept for a log that follows the new file (one made before the
                # copy of a whole write is in both: replayed, it changes nothing)
                self._whole, self._logged = False, 0 if whole or fold else self._logged + len(pending)
            try:
                if not whole:
                    self._append(pending, synced)
                if fold:
                    self._fold()
                if whole:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = self.path.with_name(self.path.name + ".tmp")
                    self._install(tmp, self.write_copy(tmp))
            except BaseException:
                with self._lock:
                    self._dirty, self._whole = True, True  # the changes taken are in no file: the next is whole
                raise

    def _fold(self) -> None:
        """Have `python -m storage.hnsw_fold` (fork+exec: no server code runs in a forked child) load the file,
        replay the log and write `<path>.fold`; put it in place. If it fails, write the file whole here."""
        folded = Path(f"{self.path}.fold")
        child = subprocess.run(
            [sys.executable, "-m", "storage.hnsw_fold", str(self.path), str(self.dim),
             json.dumps(dataclasses.asdict(self.config)), str(folded)], capture_output=True, text=True)
        if child.returncode != 0:
            with self._lock:
                self._pending = {}  # what changed from here on is in the copy, or comes after it
            self._install(folded, self.write_copy(folded))
            return
        self._install(folded, json.loads(child.stdout))

    def write_copy(self, target: Path) -> dict:
        """Write the index file whole to `target` (not put in place) from a copy of the graph taken under the
        lock (`__getstate__`); returns its sidecar (also storage.hnsw_fold's output)."""
        with self._lock:
            state = self._index.__getstate__()[0]
            meta = {"format": SIDECAR_FORMAT, "dim": self.dim, "space": self.config.space,
                    "count": self._index.get_current_count(), "deleted": sorted(self._deleted),
                    "synced_until": self.synced_until.isoformat() if self.synced_until else None}
        meta["bytes"], meta["sha256"] = write_state(target, state)
        return meta

    def _install(self, written: Path, meta: dict) -> None:
        """Put a written file and its sidecar in place (binary first), then drop the log of the old file."""
        tmp_meta = Path(f"{self.path}.json.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(written, self.path)
        os.replace(tmp_meta, f"{self.path}.json")
        self.log_path.unlink(missing_ok=True)  # follows the old file: ignored by load even when left behind
        with self._lock:
            self._base_sha = meta["sha256"]

    def _append(self, pending: dict[int, np.ndarray | None], synced: str | None) -> None:
        upserted = [(label, v) for label, v in pending.items() if v is not None]
        removed = np.array([label for label, v in pending.items() if v is None], np.int64)
        ids = np.array([label for label, _ in upserted], np.int64)
        vectors = np.array([v for _, v in upserted], np.float32).reshape(len(ids), self.dim)
        hnsw_log.append(self.log_path, self._base_sha, self.dim, hnsw_log.Change(synced, removed, ids, vectors))

    def save_if_dirty(self, whole: bool = False) -> bool:
        """Save when something changed since the last save (`whole`: or when the log holds anything)."""
        with self._lock:
            if self._dirty or (whole and self._logged):
                self.save(whole)
                return True
            return False

    def twin(self) -> VectorIndex:
        """An empty index with this one's path and settings, to be filled aside and `adopt`ed."""
        return VectorIndex(self.path, self.dim, self.config)

    def adopt(self, fresh: VectorIndex) -> None:
        """Take the contents of `fresh` (a `twin` filled aside) in place of this index's; the next save writes the
        file whole (the log on disk follows the old file)."""
        with self._lock, fresh._lock:
            self._index, self._deleted, self.synced_until = fresh._index, fresh._deleted, fresh.synced_until
            self._dirty, self._whole, self._pending = True, True, {}
            self.version += 1
        self._changed_all()  # what `fresh` took in beyond this index's contents was never told to `on_change`

    def reset(self) -> None:
        with self._lock:
            self._index = self._empty(1024)
            self._deleted = set()
            self.synced_until = None
            self._dirty, self._whole, self._pending = True, True, {}
            self.version += 1
        self._changed_all()

    def _changed_all(self) -> None:
        if self.on_change is not None:
            self.on_change(None)

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
            self._note(ids, vectors)
            self._dirty = True
            self.version += 1
        if self.on_change is not None:
            self.on_change(ids)

    def _note(self, ids: np.ndarray | list[int], vectors: np.ndarray | None) -> None:
        """Keep the changes (`vectors` None: removals) for the next save's log record, unless that save writes
        the file whole anyway (as when more labels changed than the index holds: replaying them would cost more
        than a rebuild); then nothing is copied, as during a rebuild."""
        if self._whole:
            return
        rows = [None] * len(ids) if vectors is None else list(np.array(vectors, dtype=np.float32))
        self._pending.update(zip((int(i) for i in ids), rows, strict=True))
        if len(self._pending) > max(LOG_MIN, len(self)):
            self._whole, self._pending = True, {}

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
                self._note([label], None)
                removed += 1
            self._dirty = self._dirty or removed > 0
            self.version += removed > 0
        if removed and self.on_change is not None:
            self.on_change(np.asarray(ids, np.int64))
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

    def query_many(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest labels of each of `vectors` (m, dim) and their cosines (m, k), best first, in one batched
        search (fewer than k columns when the index holds fewer)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            k = min(k, len(self))
            if k > 0:
                self._index.set_ef(max(self.config.ef_search, k))
                try:
                    labels, distances = self._index.knn_query(vectors, k=k)
                    return labels.astype(np.int64), (1.0 - distances).astype(np.float32)
                except RuntimeError:  # deleted labels left one search short: each on its own (with its fallback)
                    pass
        if k <= 0:
            return np.zeros((len(vectors), 0), np.int64), np.zeros((len(vectors), 0), np.float32)
        found = [self.query(v, k) for v in vectors]
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
