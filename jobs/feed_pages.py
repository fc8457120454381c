"""Finished first pages of feeds, answered again while nothing they were computed from has changed.

A storefront asks for the same shopper's feed over and over (each page view, each widget), and every visitor
without a vector or purchases gets the same popular page. A page asked for without a `feed_id` is a function of
who asks (their vector version, the tower's prior weight, their purchases), the query, the popularity ranking,
the compiled rules and the products on it. An entry is served again only while:
- its snapshot is still the one a new feed would be computed from (same ranking, same rules; the recommender
  hands out a new feed_id continuing it, so later pages still join without duplicates or gaps);
- every product on it is the same object in the catalog view (an edit replaces the object: a product hidden,
  put out of stock, repriced or deleted never shows from a cached page);
- the number of live products is unchanged (the page's `total`), and for a page with a category, price or
  stock filter the view has not been patched at all (an edit elsewhere may change who passes the filter).
A product edited just below an unfiltered page (not on it) shows there from the next ranking, at most
`feed.popularity_refresh_seconds` later, as it would for any snapshot.

An entry and its key are untracked by the cyclic collector (numbers, ids, a query and a page, none of which
refers back to the cache): kept for minutes, tracked ones were walked by every middle-generation pass.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import msgspec
from msgspec.structs import replace

from appliance.catalog_view import CatalogView
from appliance.pipeline import FeedPage, FeedQuery


class PageKey(msgspec.Struct, frozen=True, gc=False):
    """Who asks and what: a page is the same for everyone with the same vector version, prior weight and
    purchases (every visitor without a vector or purchases shares the popular one)."""

    vector: Hashable  # the name of their vector version (None: no vector)
    popularity_weight: float
    purchased: frozenset[int]
    query: FeedQuery


class _Entry(msgspec.Struct, frozen=True, gc=False):
    page: FeedPage
    live: int  # live products when it was computed
    version: int | None  # the view's version, for a filtered page (None: unfiltered)


class FeedPages:
    def __init__(self, size: int) -> None:
        self.size = size  # entries kept (0: off)
        self._pages: OrderedDict[PageKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def cacheable(query: FeedQuery) -> bool:
        return query.feed_id is None

    def page(self, key: PageKey, view: CatalogView, reissue: Callable[[str], str | None],
             compute: Callable[[], FeedPage], filtered: bool) -> FeedPage:
        """The page stored under `key` when still valid (with a new feed_id), else `compute()`d and stored."""
        if self.size <= 0:
            return compute()
        with self._lock:
            entry = self._pages.get(key)
        if entry is not None and self._valid(entry, view):
            feed_id = reissue(entry.page.feed_id)
            if feed_id is not None:
                with self._lock:
                    self._pages.move_to_end(key)
                self.hits += 1
                return replace(entry.page, feed_id=feed_id)  # the same items and memo (their encoding)
        self.misses += 1
        version = view.version
        page = compute()
        stored = _Entry(page, view.live_count(), version if filtered else None)
        with self._lock:
            self._pages[key] = stored
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
        return page

    @staticmethod
    def _valid(entry: _Entry, view: CatalogView) -> bool:
        if entry.live != view.live_count() or (entry.version is not None and entry.version != view.version):
            return False
        products = view.products
        return all(products.get(pid) is product for pid, product in entry.page.products.items())
