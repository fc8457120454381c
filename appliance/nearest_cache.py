"""A shopper's nearest products, looked up once per user vector and remembered (a shallow first list, extended
once when a deeper or filtered page asks for more), each with the product of their history that explains it."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import msgspec
import numpy as np

from appliance.catalog_view import CatalogView

# (vectors (m, dim), k) -> (product ids, cosine similarities), (m, k) each (fewer columns when the index holds
# fewer), each row best first: one batched search (one hold of the GIL's release and return for them all)
Lookup = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class Found(msgspec.Struct, frozen=True, gc=False):
    """One shopper's nearest products. Untracked by the cyclic collector (arrays and a dict of ints: no cycle);
    a tuple holding a dict stays tracked, and the consumer keeps one per changed shopper."""

    rows: np.ndarray  # catalog rows, best first
    cosines: np.ndarray
    complete: bool  # no deeper lookup can add any
    anchors: dict[int, int]  # row -> the product of the history that explains it


class NearestCache:
    """Nearest products per `key` (a name of one user vector), at most `capacity` keys, least recent dropped."""

    def __init__(self, nearest: Lookup, full_depth: int, capacity: int) -> None:
        self._nearest = nearest
        self.full_depth = full_depth  # a lookup this deep is complete
        self.capacity = capacity
        self._lock = threading.Lock()
        self._found: OrderedDict[Hashable, Found] = OrderedDict()

    def knows(self, key: Hashable, depth: int | None) -> bool:
        """Whether `key`'s list is cached at least `depth` deep (None: at any depth)."""
        hit = self._found.get(key) if key is not None else None
        return hit is not None and (hit.complete or depth is None or len(hit.rows) >= depth)

    def rows(self, key: Hashable, vector: np.ndarray, history: Callable[[], Sequence[int]], view: CatalogView,
             depth: int) -> Found:
        """The `depth` nearest products of `vector` as (rows, cosines, complete), best first, and for each row
        the product of the history nearest to it (what "because you viewed X" names); cached per `key`, looked
        up again only when a deeper list is asked for."""
        if key is not None:
            with self._lock:
                hit = self._found.get(key)
                if hit is not None and (hit.complete or len(hit.rows) >= depth):
                    self._found.move_to_end(key)
                    return hit
        ids, sims = self._nearest(np.asarray(vector)[None, :], depth)
        return self._keep(key, self._made(ids, sims, view, depth, [history()])[0])

    def prepare(self, wanted: Sequence[tuple[Hashable, np.ndarray, Callable[[], Sequence[int]]]], view: CatalogView,
                depth: int) -> None:
        """The `depth` nearest products of each (key, vector, history) whose key has no list cached yet, in one
        batched search: the consumer prepares a batch's shoppers at once. One search per shopper gave the GIL
        back and waited for it again each time (up to the 5 ms switch interval while the event loop is busy):
        40 % of the consumer's wall time under the write streams (BENCHMARKS.md "Feed under load", fifteenth round)."""
        todo = {key: (vector, history) for key, vector, history in wanted if not self.knows(key, None)}
        if not todo:
            return
        ids, sims = self._nearest(np.stack([v for v, _ in todo.values()]), depth)
        made = self._made(ids, sims, view, depth, [history() for _, history in todo.values()])
        for key, found in zip(todo, made, strict=True):
            self._keep(key, found)

    def _made(self, ids: np.ndarray, sims: np.ndarray, view: CatalogView, depth: int,
              histories: Sequence[Sequence[int]]) -> list[Found]:
        """Each row of a batched search as a `Found`, the catalog rows and their anchors found for all rows at
        once (a look-up per product in Python was 17 % of the consumer's CPU: "Feed under load", sixteenth round)."""
        rows, known = view.rows_where(ids)
        near, explained = anchors(view, ids, rows, known, histories)
        complete = ids.shape[1] < depth or depth >= self.full_depth
        made = []
        for found_rows, found, cosines, anchor, has in zip(rows, known, sims.astype(np.float64), near, explained,
                                                          strict=True):
            found_rows, has = found_rows[found], has[found]
            made.append(Found(found_rows, cosines[found], complete,
                              dict(zip(found_rows[has].tolist(), anchor[found][has].tolist(), strict=True))))
        return made

    def _keep(self, key: Hashable, found: Found) -> Found:
        if key is not None:
            with self._lock:
                self._found[key] = found
                while len(self._found) > self.capacity:
                    self._found.popitem(last=False)
        return found


def anchors(view: CatalogView, ids: np.ndarray, rows: np.ndarray, known: np.ndarray,
            histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """For each product `ids[i, j]` (at catalog row `rows[i, j]` where `known`): the product of shopper i's
    history (newest first) nearest to it in the catalog, the newest one of the same subcategory, else of the same
    top category (never the item itself); and where there is one. Catalog lookups only: fetching 200 product
    vectors from hnswlib costs ~5 ms, more than the lookup it explains."""
    lengths = np.fromiter(map(len, histories), np.int64, len(histories))
    width = int(lengths.max(initial=0))
    near, explained = np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
    if not width:
        return near, explained
    valid = np.arange(width) < lengths[:, None]
    past = np.zeros((len(histories), width), np.int64)
    past[valid] = np.fromiter(itertools.chain.from_iterable(histories), np.int64, int(lengths.sum()))
    past_rows, past_found = view.rows_where(past)
    past_found &= valid
    for codes in (view.top_all, view.leaf_all):  # the same subcategory wins: matched last
        mine = np.where(known, codes[rows], -1)
        theirs = codes[past_rows]
        theirs = np.where(past_found & (theirs >= 0), theirs, -2)
        match = (mine[:, :, None] == theirs[:, None, :]) & (ids[:, :, None] != past[:, None, :])
        matched = match.any(axis=2)
        near = np.where(matched, np.take_along_axis(past, match.argmax(axis=2), axis=1), near)
        explained |= matched
    return near, explained
