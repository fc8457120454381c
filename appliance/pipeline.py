"""The pipeline every feed and widget shares after its candidate sources: filters, exclusions and paging.

Nothing here walks the whole catalog for an unfiltered feed: a page takes the first allowed rows of a ranking,
a category filter starts from its posting list, and only a price or stock filter without a category reads a
whole column (vectorised).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec
import numpy as np

from appliance.catalog_view import CatalogView
from appliance.errors import InvalidInput
from appliance.types import NO_IDS, Pick, Product

SORTS = ("price_asc", "price_desc")


class FeedQuery(msgspec.Struct, frozen=True, gc=False):
    """What a feed request asks for. Untracked by the cyclic collector (numbers, strings and id sets: no
    cycle): the page cache keeps each cached page's query for minutes."""

    page: int = 1
    per_page: int = 20
    sort: str | None = None  # None: the default order; price_asc / price_desc override it
    categories: tuple[str, ...] = ()  # any level of the category path, case-insensitive; any of them matches
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    exclude: frozenset[int] = NO_IDS
    min_score: float | None = None  # items of any source scoring below this (on the 0..1 scale) are left out
    feed_id: str | None = None  # continue the feed whose page 1 returned this id (same order, no duplicates)
    explain: bool = False  # each item carries its score's parts

    def __post_init__(self) -> None:
        if self.page < 1:
            raise InvalidInput("page must be 1 or more", field="page")
        if self.per_page < 1:
            raise InvalidInput("per_page must be 1 or more", field="per_page")
        if self.sort is not None and self.sort not in SORTS:
            raise InvalidInput(f"sort must be one of {', '.join(SORTS)}", field="sort")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise InvalidInput("min_price must not exceed max_price", field="min_price")

    @property
    def span(self) -> tuple[int, int]:
        """Positions [start, end) of this page in the feed's order."""
        return (self.page - 1) * self.per_page, self.page * self.per_page


class FeedPage(msgspec.Struct, frozen=True, gc=False):
    """One page of a feed. Untracked by the cyclic collector (the page cache keeps thousands for minutes): it
    refers to picks, products and encoded bytes, none of which refers back to a page."""

    items: list[Pick]  # scores on the 0..1 scale (appliance/types.py `Pick`)
    page: int
    per_page: int
    total: int  # items matching the filters, over all pages
    ordering: str  # personal / popular / price_asc / price_desc
    products: dict[int, Product]  # the products of `items`, from the same catalog snapshot
    feed_id: str  # pass it back for the next pages
    personalized: bool
    # what the web layer derives from this page (its encoded items), shared by every answer of a cached page;
    # keyed by strings (a tuple key would make the collector track the dict)
    memo: dict[str, object] = msgspec.field(default_factory=dict)

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.per_page)


@dataclass(frozen=True)
class Selection:
    """The rows a feed may show: the live rows matching the filters (`rows` sorted; None: every live row),
    minus `skip` (exclusions and purchases, a few rows)."""

    view: CatalogView
    rows: np.ndarray | None
    skip: np.ndarray  # sorted rows
    total: int

    @classmethod
    def of(cls, view: CatalogView, query: FeedQuery, left_out: frozenset[int] = frozenset(),
           hidden: np.ndarray | None = None) -> Selection:
        """The filters of `query`; `left_out`: more product ids to leave out (the shopper's purchases);
        `hidden`: sorted rows the merchandising rules hide."""
        rows = None
        if query.categories:
            rows = view.category_rows(query.categories)
            rows = rows[_matches(view, query, rows)]
        elif query.min_price is not None or query.max_price is not None or query.in_stock is not None:
            every = np.arange(view.n, dtype=np.int64)
            rows = every[view.live & _matches(view, query, every)]
        skip = np.unique(np.asarray(view.rows_of(query.exclude | left_out), dtype=np.int64))
        if hidden is not None and len(hidden):
            skip = _merged(hidden, skip)
        return cls._of(view, rows, skip)

    @classmethod
    def _of(cls, view: CatalogView, rows: np.ndarray | None, skip: np.ndarray) -> Selection:
        if rows is None:
            skip = skip[view.live_all[skip]]
            total = view.live_count() - len(skip)
        else:
            skip = skip[members(rows, skip)]
            total = len(rows) - len(skip)
        return cls(view, rows, skip, total)

    def within(self, rows: np.ndarray) -> Selection:
        """Only these rows (sorted, unique) of the selection: e.g. those scoring at least `min_score`."""
        rows = rows[self.view.live_all[rows]]
        if self.rows is not None:
            rows = rows[members(self.rows, rows)]
        return Selection._of(self.view, rows, self.skip)

    def allows(self, rows: np.ndarray) -> np.ndarray:
        """Which of these rows the feed may show, as a mask."""
        ok = self.view.live_all[rows]
        if self.rows is not None:
            ok &= members(self.rows, rows)
        if len(self.skip):
            ok &= ~members(self.skip, rows)
        return ok

    def head(self, order: np.ndarray, end: int, rank: np.ndarray | None = None) -> np.ndarray:
        """The first `end` allowed rows of a ranking (`order`: rows best first; `rank[row]`: its position in
        `order` when `order` holds every row, so a narrow filter can sort its own rows instead of walking)."""
        if rank is not None and self.rows is not None and len(self.rows) * 8 < len(order):
            rows = self.rows[self.rows < len(rank)]
            rows = rows[self.allows(rows)]
            return rows[np.argsort(rank[rows], kind="stable")[:end]]
        found, pos, chunk = [], 0, max(256, 2 * end)
        count = 0
        while pos < len(order) and count < end:
            part = order[pos:pos + chunk]
            part = part[self.allows(part)]
            found.append(part)
            count += len(part)
            pos, chunk = pos + chunk, chunk * 2
        return np.concatenate(found)[:end] if found else np.zeros(0, np.int64)


def _merged(big: np.ndarray, small: np.ndarray) -> np.ndarray:
    """Two sorted unique row arrays as one, without sorting the big one again (a hidden brand: thousands)."""
    small = small[~members(big, small)]
    return np.insert(big, np.searchsorted(big, small), small) if len(small) else big


def members(sorted_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mask over `rows`: which are in `sorted_rows`."""
    if not len(sorted_rows):
        return np.zeros(len(rows), bool)
    pos = np.minimum(np.searchsorted(sorted_rows, rows), len(sorted_rows) - 1)
    return sorted_rows[pos] == rows


def _matches(view: CatalogView, query: FeedQuery, rows: np.ndarray) -> np.ndarray:
    """Mask over `rows`: the price and stock filters."""
    keep = np.ones(len(rows), bool)
    price = view.price_all[rows]
    with np.errstate(invalid="ignore"):
        if query.min_price is not None:
            keep &= price >= query.min_price
        if query.max_price is not None:
            keep &= price <= query.max_price
    if query.in_stock is not None:
        keep &= view.in_stock_all[rows] == query.in_stock
    return keep
