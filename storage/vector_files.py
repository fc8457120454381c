"""The files of a `VectorIndex`: load (verified, then the log replayed) and save (a log append, a fold in another
process, or the file written whole from a copy of the graph)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import hnswlib
import numpy as np

from appliance.config_sections import IndexConfig
from storage import hnsw_log
from storage.file_rows import FileRows
from storage.hnsw_file import DamagedIndex, check_structure, digest, write_state

SIDECAR_FORMAT = 2  # 2: with the file's size, SHA-256 and element count
LOG_SHARE = 0.1  # a log holding more labels than this share of the index (or LOG_MIN) is folded into the file
LOG_MIN = 10_000


class IndexFiles:
    """Persistence of `storage.vectors.VectorIndex` (its subclass, which sets these attributes and holds the graph).

    On disk: `<path>` (hnswlib binary) and `<path>.json` (dim, space, element count, the binary's size and
    SHA-256, deleted labels, synced_until), both written to temp files, then renamed, the binary first: a crash
    before its rename leaves the previous pair; between the renames, the new binary and the new sidecar still
    at `<path>.json.tmp`, which `load` takes when `<path>.json` does not describe the binary. Saves between two
    whole writes append the changes to `<path>.log` (`storage.hnsw_log`), which `load` replays, and which another
    process folds into the file once it passes LOG_SHARE of the index (`storage.hnsw_fold`).
    """

    path: Path
    log_path: Path
    dim: int
    config: IndexConfig
    synced_until: datetime | None
    version: int
    _lock: threading.RLock
    _saving: threading.Lock
    _index: hnswlib.Index
    _deleted: set[int]
    _dirty: bool
    _whole: bool
    _base_sha: str
    _pending: dict[int, np.ndarray | None]
    _logged: int
    _rows: FileRows | None
    _copying: set[int] | None

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
                rows = FileRows(self.path, self.dim, set())  # what the log replays below is marked changed
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
            self._index, self._rows, self._copying = index, rows, None
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
                if whole or fold:  # the next file is copied from here: what changes after it is not in it
                    self._copying = set()
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
        rows = FileRows(self.path, self.dim, set())  # reads the file's labels: outside the lock
        with self._lock:
            self._base_sha = meta["sha256"]
            changed, self._copying, self._rows = self._copying, None, None
            if changed is not None:  # None: reset or adopted meanwhile, the file holds other contents
                rows.changed, self._rows = changed, rows

    def _append(self, pending: dict[int, np.ndarray | None], synced: str | None) -> None:
        upserted = [(label, v) for label, v in pending.items() if v is not None]
        removed = np.array([label for label, v in pending.items() if v is None], np.int64)
        ids = np.array([label for label, _ in upserted], np.int64)
        vectors = np.array([v for _, v in upserted], np.float32).reshape(len(ids), self.dim)
        hnsw_log.append(self.log_path, self._base_sha, self.dim, hnsw_log.Change(synced, removed, ids, vectors))

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

    def save_if_dirty(self, whole: bool = False) -> bool:
        """Save when something changed since the last save (`whole`: or when the log holds anything)."""
        with self._lock:
            if self._dirty or (whole and self._logged):
                self.save(whole)
                return True
            return False
