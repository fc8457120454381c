"""Each product's nearest products by vector, ready before a request asks (related, looking similar).

A storefront asks about thousands of products, most of them now and then, so most answers of those two widgets
were first look-ups: an hnswlib search in a worker thread per product. Here the lists are computed in the
background for the most popular `limit` products (batched queries of the index, the most popular first) and kept
across vector changes by patching them: a changed product's own list is searched again, it leaves every list that
held it and joins its new neighbours' lists where it ranks (cosine similarity is symmetric, so its own search
names them); a removed product leaves every list. One re-embedded product costs one search, not a rebuild. A
change of more vectors at once than `BULK_SHARE` of the lists (an import) drops them all and builds them again.

Between a change and the end of its patch (the background thread's next turn, milliseconds) no list is served
(`get` returns None: the caller searches the index, as without the lists), so an answer never misses a product
that changed.

With a `path` the lists are saved when built and when stopped, and the first turn after a start reads them back
and patches what changed in the index since (jobs/neighbour_file.py); a file that cannot be used, or more changes
than a patch is worth, builds them as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jobs import neighbour_file
from storage.vectors import VectorIndex

log = logging.getLogger("appliance.widgets")

BULK_SHARE = 0.05  # more changed vectors at once than this share of the lists (and than BULK_MIN): build again
BULK_MIN = 1000
CHUNK = 16  # products per batched query while building: the index's lock is held for one chunk at a time
REACH = 3  # a changed product joins the lists of its REACH × depth nearest products where it ranks
SETTLE_SECONDS = 30.0  # after a bulk change, build again once the index has not changed for this long (an import)


class NeighbourLists:
    """`depth` nearest products (ids, cosines, best first) of up to `limit` products; `order()` names the products
    to build for, most asked first. Thread-safe; `start` runs builds and patches in a background thread."""

    def __init__(self, index: VectorIndex, depth: int, limit: int, order: Callable[[], np.ndarray],
                 settle: float = SETTLE_SECONDS, path: Path | None = None) -> None:
        self.index, self.depth, self.limit, self._order, self.settle = index, depth, limit, order, settle
        self.path = path  # where the lists are saved (None: not saved)
        self._lock = threading.Lock()
        self._row: dict[int, int] = {}  # product -> row of the arrays
        self._used = 0  # rows handed out (a removed product's row is not reused)
        self._ids = np.zeros((0, depth), np.int64)
        self._cos = np.zeros((0, depth), np.float32)
        self._len = np.zeros(0, np.int64)  # entries held per row (a patch may leave fewer than depth)
        self._whole = np.zeros(0, bool)  # the search found fewer than asked: every other product is in it
        self._pending: set[int] = set()  # changed since the last patch
        self._patching = False
        self._inflight: set[int] = set()  # taken by the patch under way
        self._restoring = False  # lists read from the file, not yet checked against the index
        self._tried = path is None or not limit  # whether the file was read (once, at the first turn)
        self._dirty = False  # changed since the file was written
        self._rebuild = True  # nothing built yet, or a bulk change dropped everything
        self._bulk_at = 0.0  # monotonic time of the last bulk change
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.built = threading.Event()  # set when a build has held every list once
        self._thread: threading.Thread | None = None

    @classmethod
    def attach(cls, index: VectorIndex, depth: int, limit: int, order: Callable[[], np.ndarray]) -> NeighbourLists:
        """Lists told every change of `index` and saved beside its file (`<index path>.lists`)."""
        lists = cls(index, depth, limit, order, path=Path(f"{index.path}.lists"))
        index.on_change = lists.changed
        return lists

    def __len__(self) -> int:
        return len(self._row)

    def get(self, anchor: int, depth: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The anchor's `depth` nearest products and their cosines (copies), or None when not held that deep."""
        with self._lock:
            row = self._row.get(anchor)
            if row is None or depth > self.depth or self._pending or self._patching or self._rebuild \
                    or self._restoring:
                return None
            n = int(self._len[row])
            if n < depth and not self._whole[row]:
                return None
            return self._ids[row, :min(n, depth)].copy(), self._cos[row, :min(n, depth)].astype(np.float64)

    def changed(self, labels: np.ndarray | None) -> None:
        """The index changed these labels' vectors (added, replaced or removed); None: all of them (a reload)."""
        if not self.limit:
            return
        with self._lock:
            self._dirty = True
            if labels is None or len(self._pending) + len(labels) > max(BULK_MIN, BULK_SHARE * len(self._row)):
                self._rebuild, self._pending, self._bulk_at = True, set(), time.monotonic()
            elif not self._rebuild:
                self._pending.update(int(i) for i in labels)
        self._wake.set()

    # -- the background work ------------------------------------------------------------------------------
    def start(self) -> None:
        if self.limit and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="neighbour-lists", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (a build stops within a chunk), then save what changed since the file."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._dirty:
            try:
                self.save()
            except Exception:  # the next start builds the lists, or patches an older file
                log.exception("saving the neighbour lists failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                self.catch_up()
            except Exception:  # only a head start: a product without a list is searched when asked
                log.exception("neighbour lists failed")

    def catch_up(self) -> None:
        """Read the saved lists at the first turn; build every list when asked to (first without a file, or once
        a bulk change has settled); else patch the pending changes."""
        missing = None
        if self._rebuild and not self._tried:
            self._tried = True
            missing = self.restore()
        if self._rebuild:
            wait = self._bulk_at + self.settle - time.monotonic()
            if wait > 0:  # an import goes on: one build when it is done, not one per batch
                if not self._stop.wait(wait):
                    self._wake.set()  # the next turn looks again
                return
            if self.build():
                self.save()
        with self._lock:
            pending, self._pending, self._patching = self._pending, set(), True
            self._inflight = pending
        try:
            if pending:
                self.patch(np.fromiter(pending, np.int64, len(pending)))
        finally:
            self._patching, self._inflight = False, set()
        if missing is not None and self._searched(missing, build=True) is not None:  # restored and repaired: then
            self.built.set()  # the most asked products the file did not hold (stopped by closing or a bulk change)
            log.info("neighbour lists ready for %d products: read back", len(self._row))

    def restore(self) -> np.ndarray | None:
        """Take the saved lists (if any and usable) and mark what changed in the index since as pending; returns
        the most asked products they do not hold (None: not restored, the lists are to be built).

        The lists are installed before the index is read: a change from then on is pending like any other, and one
        made before is in the index's vectors, which the file's fingerprints are compared with."""
        saved = neighbour_file.read(self.path, self.depth, self.index.dim)
        if saved is None:
            return None
        with self._lock:
            self._row = dict(zip(saved.anchors.tolist(), range(len(saved.anchors)), strict=True))
            self._ids, self._cos, self._len, self._whole = saved.ids, saved.cos, saved.lengths, saved.whole
            self._used = len(saved.anchors)
            self._rebuild, self._restoring, self._pending, self._dirty = False, True, set(), False
        labels, prints = neighbour_file.fingerprints(self.index)
        stale = neighbour_file.stale(saved, labels, prints)
        wanted = np.asarray(self._order(), np.int64)[:self.limit]
        missing = np.setdiff1d(np.intersect1d(wanted, labels), np.union1d(saved.anchors, stale))
        with self._lock:
            self._restoring = False
            if len(stale) > max(BULK_MIN, BULK_SHARE * len(self._row)):
                self._rebuild = True
                log.info("neighbour lists in %s: %d products changed since, built again", self.path.name, len(stale))
                return None
            self._pending.update(stale.tolist())
            self._dirty = self._dirty or bool(len(stale) or len(missing))
        log.info("neighbour lists of %d products read from %s: %d changed since, %d more to search",
                 len(saved.anchors), self.path.name, len(stale), len(missing))
        return missing

    def save(self) -> None:
        """Write the lists to `path` (jobs/neighbour_file.py); nothing while none are built or a build is due.

        The index's fingerprints are read before the lists: a vector changed before its print was read was told to
        `changed` before that (the index tells under its lock), so the lists read after hold its change or have it
        pending (saved as unknown); a later change leaves the old print, which a restart finds changed."""
        if self.path is None or not self.built.is_set() or self._rebuild:
            return
        labels, prints = neighbour_file.fingerprints(self.index)
        with self._lock:
            if self._rebuild or self._restoring:
                return
            anchors = np.fromiter(self._row, np.int64, len(self._row))
            rows = np.fromiter(self._row.values(), np.int64, len(self._row))
            unknown = self._pending | self._inflight
            saved = neighbour_file.Saved(anchors, self._ids[rows], self._cos[rows], self._len[rows], self._whole[rows],
                                         labels, prints, np.fromiter(unknown, np.int64, len(unknown)))
            self._dirty = False
        try:
            neighbour_file.write(self.path, saved, self.depth, self.index.dim)
        except BaseException:
            self._dirty = True
            raise
        log.info("neighbour lists of %d products saved to %s", len(anchors), self.path.name)

    def build(self) -> bool:
        """Every list searched again, the most asked first; False when stopped (closing, or a bulk change)."""
        with self._lock:
            self._rebuild = False
            self._row, self._len, self._whole, self._used = {}, np.zeros(0, np.int64), np.zeros(0, bool), 0
            self._ids, self._cos = np.zeros((0, self.depth), np.int64), np.zeros((0, self.depth), np.float32)
        wanted = np.asarray(self._order(), np.int64)[:self.limit]
        log.info("building neighbour lists for %d products", len(wanted))
        if self._searched(wanted, build=True) is None:
            return False  # closing, or a bulk change since: the next turn starts again
        self.built.set()
        log.info("neighbour lists ready for %d products: built", len(self._row))
        return True

    def patch(self, labels: np.ndarray) -> None:
        """These labels changed: every list that held one is searched again; those still in the index are
        searched again (their own lists), then put into the lists of the products near them where they rank (a
        search `REACH` × depth deep: cosine is symmetric, being among the nearest is not, so a list whose
        products are all nearer than the changed one's `REACH` × depth nearest can miss it)."""
        # this thread is the only writer: the scan reads without the lock (the event loop's `get` waits for none
        # of it)
        held = np.isin(self._ids, labels) & (np.arange(self.depth) < self._len[:, None])
        holders = np.flatnonzero(held.any(axis=1))
        if len(holders):
            by_row = {row: label for label, row in self._row.items()}
            self._searched(np.array([by_row[r] for r in holders.tolist()], np.int64))
        own = self._searched(labels) or []
        for start in range(0, len(own), CHUNK):
            part = own[start:start + CHUNK]
            near, sims = self.index.query_many(np.stack([v for _, v in part]), REACH * self.depth + 1)
            with self._lock:
                for (label, _), ids, cosines in zip(part, near, sims, strict=True):
                    for other, cosine in zip(ids.tolist(), cosines.tolist(), strict=True):
                        row = self._row.get(other)
                        if row is not None and other != label:
                            self._insert(row, label, cosine)

    def _searched(self, labels: np.ndarray, build: bool = False) -> list[tuple[int, np.ndarray]] | None:
        """Search these labels' own lists (those in the index) CHUNK at a time and hold them; returns (label,
        vector) of each (None: a build stopped by closing or by a bulk change)."""
        out = []
        for start in range(0, len(labels), CHUNK):
            if build and (self._stop.is_set() or self._rebuild):
                return None
            chunk = labels[start:start + CHUNK]
            vectors = self.index.lookup(chunk)
            gone = [int(a) for a in chunk.tolist() if int(a) not in vectors and int(a) in self._row]
            if gone:  # removed from the index: its list goes (its row is not reused)
                with self._lock:
                    for label in gone:  # emptied: a patch's scan for holders passes it
                        self._len[self._row.pop(label)] = 0
            if not vectors:
                continue
            asked = list(vectors)
            found, sims = self.index.query_many(np.stack([vectors[a] for a in asked]), self.depth + 1)
            with self._lock:
                for label, ids, cosines in zip(asked, found, sims, strict=True):
                    mine = ids != label
                    ids, cosines = ids[mine][:self.depth], cosines[mine][:self.depth]
                    row = self._row.get(label)
                    if row is None:
                        row = self._row[label] = self._grow()
                    n = len(ids)
                    self._ids[row, :n], self._cos[row, :n], self._len[row] = ids, cosines, n
                    self._whole[row] = found.shape[1] <= self.depth and n < self.depth
                    out.append((label, vectors[label]))
        return out

    def _grow(self) -> int:
        """A new row (the arrays doubled when full)."""
        row, self._used = self._used, self._used + 1
        if row >= len(self._len):
            size = max(2 * len(self._len), 1024)
            for name, fill in (("_ids", -1), ("_cos", 0.0), ("_len", 0), ("_whole", False)):
                old = getattr(self, name)
                new = np.full((size, *old.shape[1:]), fill, old.dtype)
                new[:len(old)] = old
                setattr(self, name, new)
        return row

    def _insert(self, row: int, label: int, cosine: float) -> None:
        """`label` into this row's list at its rank, if it ranks (the last falls off a full list)."""
        n = int(self._len[row])
        ids, cos = self._ids[row], self._cos[row]
        if label in ids[:n].tolist():
            return
        at = int(np.searchsorted(-cos[:n], -cosine, side="right"))
        if at >= n and not self._whole[row]:  # below what the list holds: what lies between is not known
            return
        end = min(n + 1, self.depth)
        ids[at + 1:end], cos[at + 1:end] = ids[at:end - 1].copy(), cos[at:end - 1].copy()
        ids[at], cos[at] = label, cosine
        self._len[row] = end
