"""The catalog as column arrays (row i = one product), patched in place when products change.

Rows are stable: a product keeps its row for the life of the view (a removed product's row is marked dead,
a new product gets the next row), so rankings and feed snapshots computed earlier stay valid after an edit.
Readers take no lock: a column is written element by element, a category posting list or a grown column is
replaced by a new array (copy on write), and `n` moves only after the new rows are written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from appliance.types import Product

_NO_ROWS = np.zeros(0, np.int64)
_NOTHING: frozenset = frozenset()
LOG_PATCHES = 512  # patches `changed_since` can look back over (10 edits/s: the last ~50 s)


def _names(product: Product) -> set[str]:
    """The category names a product is found under: every level of its path, case-insensitive."""
    return {c.strip().lower() for c in product.category_path}


def _brands(product: Product) -> set[str]:
    """The brand a product is found under (case-insensitive), none without a merchant."""
    return {product.merchant.strip().lower()} if product.merchant else set()


class CatalogView:
    """Columns over every product ever seen by this view; `live[row]` is False once a product is removed."""

    def __init__(self, products: Sequence[Product]) -> None:
        self.products: dict[int, Product] = {}
        self.row: dict[int, int] = {}
        self.n = 0
        self.version = 0  # bumped by every patch
        # (version it made, products it changed, category names whose members changed), oldest first; a new tuple
        # per patch, so a reader holding the old one is unaffected
        self._log: tuple[tuple[int, frozenset[int], frozenset[str]], ...] = ()
        self._arrivals = 0  # bumped when a row is added or a product's created_at changes
        self._newest: tuple[int, np.ndarray] | None = None  # (arrivals, every row newest first)
        # (n, rows 0..n-1 by product id, their ids): sorted once, for a row's id never changes
        self._by_id: tuple[int, np.ndarray, np.ndarray] = (0, _NO_ROWS, _NO_ROWS)
        self._codes: dict[str, int] = {}  # category name (as written) -> its code in `leaf_all` / `top_all`
        self._allocate(max(1024, len(products)))
        self.by_category: dict[str, np.ndarray] = {}
        self.by_brand: dict[str, np.ndarray] = {}  # merchant (lower case) -> sorted live rows: rules match brands
        self.upsert(products)

    def _allocate(self, capacity: int) -> None:
        old = self.n
        ids, price, created = np.zeros(capacity, np.int64), np.full(capacity, np.nan), np.zeros(capacity)
        in_stock, live = np.zeros(capacity, bool), np.zeros(capacity, bool)
        product, brand, path = (np.full(capacity, None, object) for _ in range(3))
        leaf, top = np.full(capacity, -1, np.int32), np.full(capacity, -1, np.int32)
        if old:
            ids[:old], price[:old], created[:old] = self.ids_all[:old], self.price_all[:old], self.created_all[:old]
            in_stock[:old], live[:old] = self.in_stock_all[:old], self.live_all[:old]
            product[:old], brand[:old], path[:old] = self.product_all[:old], self.brand_all[:old], self.path_all[:old]
            leaf[:old], top[:old] = self.leaf_all[:old], self.top_all[:old]
        self.ids_all, self.price_all, self.created_all = ids, price, created
        self.in_stock_all, self.live_all = in_stock, live
        # per row, for a page's one gather instead of a look-up per item: the live product (None once removed),
        # and what diversity counts runs of (None: no brand / no category path)
        self.product_all, self.brand_all, self.path_all = product, brand, path
        # codes of the path's last and first names (-1: no path, or removed): what "because you viewed" matches on
        self.leaf_all, self.top_all = leaf, top

    # Views of the rows in use (row i of each = one product).
    @property
    def ids(self) -> np.ndarray:
        return self.ids_all[:self.n]

    @property
    def price(self) -> np.ndarray:
        return self.price_all[:self.n]

    @property
    def created(self) -> np.ndarray:
        return self.created_all[:self.n]

    @property
    def in_stock(self) -> np.ndarray:
        return self.in_stock_all[:self.n]

    @property
    def live(self) -> np.ndarray:
        return self.live_all[:self.n]

    def __len__(self) -> int:
        return self.n

    def live_count(self) -> int:
        return len(self.products)

    def upsert(self, products: Iterable[Product]) -> np.ndarray:
        """Add or replace products; the rows of the products that are new to the view (for the rankings)."""
        products = list(products)
        new = [p for p in products if p.product_id not in self.row]
        if self.n + len(new) > len(self.ids_all):
            self._allocate(max(2 * len(self.ids_all), self.n + len(new)))
        Changes = dict[str, list[int]]  # name -> rows gaining (or losing) it
        changes: dict[str, tuple[Changes, Changes]] = {"category": ({}, {}), "brand": ({}, {})}
        next_row = self.n
        moved = bool(new)  # the newest-first order changes
        for p in products:
            row = self.row.get(p.product_id)
            old = None
            if row is None:
                row, next_row = next_row, next_row + 1
            else:
                old = self.products.get(p.product_id)
            for kind, names in (("category", _names), ("brand", _brands)):
                added, removed = changes[kind]
                before, after = (names(old) if old is not None else set()), names(p)
                for name in after - before:
                    added.setdefault(name, []).append(row)
                for name in before - after:
                    removed.setdefault(name, []).append(row)
            self.ids_all[row] = p.product_id
            self.price_all[row] = np.nan if p.price is None else p.price
            created = p.created_at.timestamp() if p.created_at else 0.0
            moved = moved or created != self.created_all[row]
            self.created_all[row] = created
            self.in_stock_all[row] = p.in_stock
            self.live_all[row] = True
            self.product_all[row] = p
            self.brand_all[row], self.path_all[row] = p.merchant or None, p.category_path or None
            self.leaf_all[row], self.top_all[row] = (self._code(p.category_path[-1]), self._code(p.category_path[0])) \
                if p.category_path else (-1, -1)
            self.products[p.product_id] = p
            self.row[p.product_id] = row
        self._post(self.by_category, *changes["category"])
        self._post(self.by_brand, *changes["brand"])
        first_new = self.n
        self.n = next_row
        moved_names = changes["category"][0].keys() | changes["category"][1].keys()
        self._logged({p.product_id for p in products}, moved_names)
        self.version += 1
        self._arrivals += moved
        return np.arange(first_new, next_row, dtype=np.int64)

    def _code(self, name: str) -> int:
        return self._codes.setdefault(name, len(self._codes))

    def newest_first(self) -> np.ndarray:
        """Every row (dead ones too), newest first (created_at desc, then product id): sorted again only after a
        product arrives or its created_at changes, not for each popularity ranking (the sort was ~80 % of one
        at 1M products, every `popularity_refresh_seconds`)."""
        cached = self._newest
        if cached is None or cached[0] != self._arrivals:
            arrivals, n = self._arrivals, self.n
            cached = (arrivals, np.lexsort((self.ids_all[:n], -self.created_all[:n])))
            self._newest = cached
        return cached[1]

    def remove(self, product_ids: Iterable[int]) -> None:
        """Mark products as gone: their rows stay (dead) so earlier rankings keep their positions."""
        product_ids = list(product_ids)
        removed: dict[str, list[int]] = {}
        brands: dict[str, list[int]] = {}
        for pid in product_ids:
            product = self.products.pop(pid, None)
            if product is None:
                continue
            row = self.row[pid]
            self.live_all[row] = False
            self.product_all[row] = self.brand_all[row] = self.path_all[row] = None
            self.leaf_all[row] = self.top_all[row] = -1
            for name in _names(product):
                removed.setdefault(name, []).append(row)
            for name in _brands(product):
                brands.setdefault(name, []).append(row)
        self._post(self.by_category, {}, removed)
        self._post(self.by_brand, {}, brands)
        self._logged(set(product_ids), removed.keys())
        self.version += 1

    def _logged(self, product_ids: Iterable[int], categories: Iterable[str]) -> None:
        """The patch about to be published as the next version, in the log (before `version` moves: a reader
        that sees the new version finds its entry)."""
        entry = (self.version + 1, frozenset(product_ids), frozenset(categories))
        self._log = (*self._log[1 - LOG_PATCHES:], entry)

    def changed_since(self, version: int) -> tuple[frozenset[int], frozenset[str]] | None:
        """The products patched (added, edited, removed) after `version`, and the category names whose members
        changed meanwhile; None when the log no longer reaches back that far. What a cache computed at `version`
        checks to know whether it still holds."""
        if version == self.version:
            return _NOTHING, _NOTHING
        log = self._log
        if not log or log[0][0] > version + 1:
            return None
        products: set[int] = set()
        names: set[str] = set()
        for made, ids, moved in reversed(log):
            if made <= version:
                break
            products |= ids
            names |= moved
        return frozenset(products), frozenset(names)

    @staticmethod
    def _post(postings: dict[str, np.ndarray], added: dict[str, list[int]], removed: dict[str, list[int]]) -> None:
        for name in added.keys() | removed.keys():
            rows = postings.get(name, _NO_ROWS)
            if name in removed:
                rows = rows[~np.isin(rows, removed[name])]
            if name in added:
                rows = np.union1d(rows, np.asarray(added[name], dtype=np.int64))
            postings[name] = rows  # a new array: readers holding the old one are unaffected

    def category_rows(self, names: Sequence[str]) -> np.ndarray:
        """Sorted live rows under any of these category names (any level of the path, case-insensitive)."""
        lists = [self.by_category.get(n.strip().lower(), _NO_ROWS) for n in names]
        return lists[0] if len(lists) == 1 else np.unique(np.concatenate(lists))

    def rows_where(self, product_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of `product_ids` (any shape) and where they are live products: (rows, found), both shaped as
        `product_ids` (a row where not found means nothing). The rows' order by id is sorted again only when rows
        are added, merging the new ones in (an argsort per call was ~5 ms at 100k products)."""
        n, (sorted_n, by_id, sorted_ids) = self.n, self._by_id
        if sorted_n != n:
            ids = self.ids_all[:n]
            order = np.concatenate([by_id, sorted_n + np.argsort(ids[sorted_n:], kind="stable")])
            by_id = order[np.argsort(ids[order], kind="stable")]  # two sorted runs: merged, not sorted again
            sorted_ids = ids[by_id]  # searched without a sorter: 6x faster (no gather per probe)
            self._by_id = (n, by_id, sorted_ids)
        if not n:
            return np.zeros(np.shape(product_ids), np.int64), np.zeros(np.shape(product_ids), bool)
        at = np.minimum(np.searchsorted(sorted_ids, product_ids), n - 1)
        return by_id[at], (sorted_ids[at] == product_ids) & self.live_all[by_id[at]]

    def rows_of_array(self, product_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised `rows_of` for many ids: (rows of the live ones, mask over `product_ids` of those found)."""
        rows, found = self.rows_where(product_ids)
        return rows[found], found

    def rows_of(self, product_ids: Iterable[int]) -> list[int]:
        """The live rows of these products (unknown or removed ones are left out)."""
        products, row = self.products, self.row
        return [row[pid] for pid in product_ids if pid in products]
