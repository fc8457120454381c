"""A shopper's nearest products, looked up once per user vector and remembered (a shallow first list, extended
once when a deeper or filtered page asks for more), each with the product of their history that explains it."""

from __future__ import annotations

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
        return self._keep(key, self._make(ids[0], sims[0], view, depth, history()))

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
        for (key, (_, history)), found_ids, found_sims in zip(todo.items(), ids, sims, strict=True):
            self._keep(key, self._make(found_ids, found_sims, view, depth, history()))

    def _make(self, ids: np.ndarray, sims: np.ndarray, view: CatalogView, depth: int,
              history: Sequence[int]) -> Found:
        id_list = ids.tolist()
        products, row = view.products, view.row
        known = [i for i, pid in enumerate(id_list) if pid in products]
        rows = np.fromiter((row[id_list[i]] for i in known), np.int64, len(known))
        complete = len(id_list) < depth or depth >= self.full_depth
        return Found(rows, np.asarray(sims, dtype=np.float64)[known], complete, anchors(view, rows, history))

    def _keep(self, key: Hashable, found: Found) -> Found:
        if key is not None:
            with self._lock:
                self._found[key] = found
                while len(self._found) > self.capacity:
                    self._found.popitem(last=False)
        return found


def anchors(view: CatalogView, rows: np.ndarray, history: Sequence[int]) -> dict[int, int]:
    """row -> the product of the shopper's history (newest first) nearest to it in the catalog: the newest
    one of the same subcategory, else of the same top category (never the item itself). Catalog lookups
    only: fetching 200 product vectors from hnswlib costs ~5 ms, more than the lookup it explains."""
    products = view.products
    leaf: dict[str, list[int]] = {}  # the newest two of each (one may be the item itself)
    top: dict[str, list[int]] = {}
    for pid in history:
        path = products[pid].category_path if pid in products else ()
        for names, name in ((leaf, path[-1:]), (top, path[:1])):
            if name and len(found := names.setdefault(name[0], [])) < 2 and pid not in found:
                found.append(pid)
    out: dict[int, int] = {}
    for row, pid, path in zip(rows.tolist(), view.ids_all[rows].tolist(), view.path_all[rows].tolist(), strict=True):
        if path:  # the row's own column (None for a product without a category path)
            near = [a for a in leaf.get(path[-1], []) + top.get(path[0], []) if a != pid]
            if near:
                out[row] = near[0]
    return out
