"""Keeps product vectors complete: embeds lines that have none, mirrors DuckDB into the hnswlib index."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import numpy as np

from appliance.encoder import Encoder
from storage.catalog import CatalogStore
from storage.db import VectorPage
from storage.vectors import VectorIndex

log = logging.getLogger("appliance.index")
Progress = Callable[[int], None]
# (changed_since) -> pages of (ids, vectors, time up to which the answer is complete), read in one snapshot
ChangedSince = Callable[[datetime | None], Iterable[VectorPage]]


# adds of one sync per hold of the mirror's lock: an edit's `put` waits for one piece, not for the whole sync
# (holds p50 20-32 ms, max 145-152 ms at 6k products on the loaded machine; BENCHMARKS.md "Sixth round (branch
# `upload9`)")
SYNC_PIECE = 32


class IndexMirror:
    """Keeps an hnswlib index in step with a DuckDB table of vectors (products or users)."""

    def __init__(self, index: VectorIndex, changed_since: ChangedSince, stored_ids: Callable[[], np.ndarray],
                 threads: int = 1) -> None:
        self.index = index
        self.changed_since = changed_since
        self.stored_ids = stored_ids  # the sorted ids the table holds a vector for (no vector read)
        self.threads = threads  # hnswlib threads for the adds of one sync
        self._lock = threading.Lock()  # every change of the index (a sync's takes it one piece at a time)
        self._syncing = threading.Lock()  # one sync at a time, and none while `compact` swaps the index
        # the ids `put` or `remove` changed while a sync runs: its snapshot is older, its pieces skip them
        self._touched: set[int] | None = None

    def sync(self) -> int:
        """Add to the index every vector changed since the last sync; returns how many.

        The sync's lock is taken per piece of SYNC_PIECE adds, not for the whole sync: a `put` (an edit's own
        vector) waited for all of it, 2,048 adds to a 48k index, ~20 s on a loaded machine (BENCHMARKS.md "Sixth
        round (branch `upload9`)"). What `put` or `remove` changes meanwhile is newer than the sync's snapshot:
        the pieces after leave those ids alone (a removal is not undone, an edit's vector not set back)."""
        with self._syncing:
            with self._lock:
                self._touched = set()
            try:
                return self._fill(self.index, SYNC_PIECE)
            finally:
                with self._lock:
                    self._touched = None

    def _fill(self, index: VectorIndex, piece: int = 0) -> int:
        """Add to `index` what changed since its `synced_until`, a page at a time: with `piece`, that many adds per
        hold of the lock (`sync`); without, the caller holds it or owns `index` (`compact`). Returns how many."""
        added, complete = 0, None
        for ids, vectors, done in self.changed_since(index.synced_until):
            if piece:
                for start in range(0, len(ids), piece):
                    self._add_piece(index, ids[start:start + piece], vectors[start:start + piece])
                    time.sleep(0)  # a thread waiting for the lock takes it before the next piece (Lock is not fair)
            else:
                index.upsert(ids, vectors, self.threads)
            added, complete = added + len(ids), done
        if complete is not None:
            index.synced_until = complete
        return added

    def _add_piece(self, index: VectorIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
        with self._lock:
            if self._touched:
                keep = ~np.isin(ids, np.fromiter(self._touched, np.int64, len(self._touched)))
                ids, vectors = ids[keep], vectors[keep]
            index.upsert(ids, vectors, self.threads)

    def compact(self) -> None:
        """Rebuild the index from DuckDB without its deleted slots, aside: queries, syncs and removals go on with
        the index meanwhile (a reset and a sync held its lock for the whole rebuild: every feed waited). Then,
        under the sync's lock, what changed since the aside read is replayed on the new index (the vectors changed
        since, the ids that left DuckDB), which takes the old one's place, and is written whole (a crash before
        that leaves the old file and its log: start-up loads them and syncs)."""
        fresh = self.index.twin()
        self._fill(fresh)
        with self._syncing, self._lock:  # every change of the index takes it: none is made to the old one from here on
            self._fill(fresh)
            fresh.remove(np.setdiff1d(fresh.ids(), self.stored_ids()))
            self.index.adopt(fresh)
        self.index.save(whole=True)

    def put(self, read: Callable[[], tuple[np.ndarray, np.ndarray]]) -> int:
        """Add the vectors `read()` returns (a few, read from DuckDB under the sync's lock: a removal made before is
        seen) without moving `synced_until`, which the next `sync` resumes from; returns how many."""
        with self._lock:
            ids, vectors = read()
            self.index.upsert(ids, vectors, self.threads)
            self._touch(ids)
            return len(ids)

    def remove(self, ids: Sequence[int]) -> int:
        """Drop ids from the index, after they left DuckDB: under the sync's lock, so a sync that read them
        before cannot add them back after."""
        with self._lock:
            self._touch(ids)
            return self.index.remove(np.asarray(ids, dtype=np.int64))

    def _touch(self, ids: Iterable[int]) -> None:
        """Under the lock: a sync in flight leaves these ids alone (its snapshot predates this change)."""
        if self._touched is not None:
            self._touched.update(int(i) for i in ids)

    def reconcile(self) -> str:
        """At start-up: load the index (its file and log), sync what changed in DuckDB since, or rebuild it from
        DuckDB when missing, unreadable or out of step after that sync (a crash after the last save leaves only
        what the sync brings back behind: the products created since no longer cost a rebuild)."""
        with self._lock:
            problem = self.index.load()
        self.sync()
        with self._lock:  # the ids alone: reading every vector to compare them took 8.6 s at 100k products
            stale = problem is None and not np.array_equal(np.sort(self.index.ids()), self.stored_ids())
            if stale:
                self.index.reset()
                problem = "its ids differ from DuckDB's"
        if problem is not None:
            log.warning("%s is rebuilt from DuckDB: %s", self.index.path.name, problem)
        if stale:
            self.sync()
        # a loaded index the sync left alone is not written again; what the sync changed goes to the log (a whole
        # write copies the graph under the GIL: ~1.6 GB at 1M products); a rebuilt one is written whole
        self.index.save_if_dirty()
        return "loaded" if problem is None else "rebuilt"


# lines embedded between two index syncs (and saves) of a long embedding pass: a bulk upload's products are
# searchable as they are embedded, and its index is saved as it grows (its first save, the file written whole,
# copied the whole graph at the end of the upload: +80 MiB at 50k products, on top of the index itself)
SYNC_EVERY = 2048


class CatalogIndexer:
    def __init__(
        self, catalog: CatalogStore, encoder: Encoder, index: VectorIndex, batch: int, threads: int = 1,
        sync_every: int = SYNC_EVERY,
    ) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.index = index
        self.batch = batch
        self.sync_every = sync_every
        # as many threads as encoding takes: adds follow it
        self.mirror = IndexMirror(index, catalog.vector_pages, catalog.vector_ids, threads)
        # one embedding pass at a time: the reindex job's pass beside the background indexer's asked for the same
        # oldest pending lines and encoded each of them twice (half the rate of a bulk upload past 10 minutes)
        self._embedding = threading.Lock()

    def embed_lines(self, lines: Sequence[tuple[str, str]]) -> int:
        """Encode (text_hash, text) pairs and cache their vectors in DuckDB."""
        if not lines:
            return 0
        vectors = self.encoder.encode([text for _, text in lines])
        self.catalog.save_vectors([h for h, _ in lines], vectors)
        return len(lines)

    def embed_pending(self, progress: Progress | None = None, stop: Callable[[], bool] = lambda: False) -> int:
        """Embed every line still without a vector, batch by batch (until `stop()`), syncing and saving the index
        every `sync_every` lines; returns how many."""
        done = unsynced = 0
        with self._embedding:  # a second caller waits, then finds what the first embedded done
            while not stop() and (lines := self.catalog.pending(self.batch)):
                embedded = self.embed_lines(lines)
                done, unsynced = done + embedded, unsynced + embedded
                if unsynced >= self.sync_every:
                    self.sync_index()
                    self.index.save_if_dirty()
                    unsynced = 0
                if progress:
                    progress(len(lines))
        return done

    def sync_index(self) -> int:
        return self.mirror.sync()

    def sync_products(self, product_ids: Sequence[int]) -> int:
        """Index these products' vectors now (an edit that embedded its line before answering). A full sync read
        every vector changed since `synced_until`, which stays before the oldest line still pending: during a bulk
        upload, each `PUT /products/{id}` read all the upload had embedded so far."""
        return self.mirror.put(lambda: self.catalog.vectors_of(product_ids))

    def reconcile(self) -> str:
        return self.mirror.reconcile()

    def run_once(self, stop: Callable[[], bool] = lambda: False) -> int:
        """One pass of the background worker: embed what is pending, sync, save."""
        embedded = self.embed_pending(stop=stop)
        self.sync_index()
        self.index.save_if_dirty()
        return embedded


class BackgroundIndexer:
    """A daemon thread that runs `CatalogIndexer.run_once` whenever it is kicked."""

    def __init__(self, indexer: CatalogIndexer, on_error: Callable[[BaseException], None]) -> None:
        self.indexer = indexer
        self.on_error = on_error
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="catalog-indexer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                break
            try:
                self.indexer.run_once(stop=lambda: self._stop)
            except Exception as exc:  # the worker must survive one bad batch; the error is reported
                self.on_error(exc)
            if not self._wake.is_set():
                self._idle.set()
