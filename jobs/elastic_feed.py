"""The feed ranked inside the shop's Elasticsearch, finished by the appliance's own steps: the merchandising
rules (hidden products never appear, boosts and buries reorder, pins take their position), the filters,
min_score and diversity, as every feed and widget of the appliance (appliance/finish.py).

Elasticsearch ranks a head of candidates (the page's end twice over, at least `feed.personal_depth`), with the
hidden products already left out of its query so that its total counts what the shopper can see; the
appliance then finishes that head and cuts the page. A price sort is the shopper's own order: hidden products
stay out, no pins, no diversity, paged inside Elasticsearch (as the appliance's own feed does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from msgspec import structs

from appliance.config import Config
from appliance.errors import InvalidInput
from appliance.finish import Finish, finish
from appliance.pipeline import FeedPage, FeedQuery
from appliance.recommender import Personal, Recommender
from appliance.types import Pick
from jobs.feed import Feeds
from storage.elastic import search_feed_page
from storage.elastic_outbox import ElasticSync, NoopElasticSync
from storage.ids import ShopIds

MAX_WINDOW = 10_000  # Elasticsearch's index.max_result_window: the deepest head it ranks
REASONS = {"personal": "picked for you", "price": "by price", "popular": "popular"}


@dataclass(frozen=True)
class ElasticFeed:
    config: Config
    elastic: ElasticSync | NoopElasticSync
    ids: ShopIds
    feeds: Feeds
    recommender: Recommender
    clock: Callable[[], datetime]

    def page(self, query: FeedQuery, customer: int | None, method: str) -> FeedPage:
        """script_score (exact cosine) or knn (approximate, HNSW); popularity / price order without a vector.
        Scores on the 0..1 scale: (cosine + 1) / 2, or the product's popularity relative to the most popular
        one; then moved by the rules as everywhere."""
        if not self.elastic.enabled:
            raise InvalidInput("elasticsearch is not configured ([elasticsearch] enabled = false)", field="backend")
        who = self.feeds.personal(customer) or Personal(None)
        vector = who.vector if query.sort is None else None
        purchased = who.purchased if self.config.feed.exclude_purchased else frozenset()
        view = self.recommender.view()
        now = self.clock()
        merch = self.recommender.compiled(view)  # the rules active now, compiled once per catalog and rule set
        active = merch.rules
        hidden = view.ids_all[merch.hidden].tolist()
        # the documents are keyed by the shop's ids: so are the excluded ones and the hits
        excluded = frozenset(self._exts(query.exclude | purchased | set(hidden)))
        start, end = query.span
        ranked = query.sort is None
        depth = min(MAX_WINDOW, max(self.config.feed.personal_depth, 2 * end)) if ranked else query.per_page
        hits, total = search_feed_page(
            self.elastic.client, self.config.elasticsearch, vector, method=method,
            filters=structs.replace(query, exclude=excluded), page=1 if ranked else query.page, per_page=depth,
            fallback_sort=query.sort,
        )
        source = "personal" if vector is not None else ("price" if query.sort else "popular")
        _, popularity = self.recommender.popularity_of(view)
        top = float(popularity.max()) if len(popularity) and popularity.max() > 0 else 1.0

        def score_of(key: int, cosine: float) -> float:
            if vector is not None:
                return (cosine + 1.0) / 2.0
            row = view.row[key]
            return float(popularity[row]) / top if row < len(popularity) else 0.0  # newer than the ranking: none yet

        keys = self.ids.products.keys([pid for pid, _ in hits])
        items = [Pick(key, score_of(key, score), source, REASONS[source])
                 for key, (_, score) in zip(keys, hits, strict=True) if key is not None and key in view.products]
        if ranked:
            widgets = self.config.widgets
            found = {p.product_id for p in items}
            # the whole head, whatever the page: every page of one depth is cut from one order
            items = finish(view, items, Finish(query, depth, purchased, widgets.max_in_row, widgets.diversity_by,
                                               active, now))
            total += sum(p.source == "pinned" and p.product_id not in found for p in items)  # brought in
            items = items[start:end]
        ordering = "personal" if vector is not None else (query.sort or "popular")
        return FeedPage(items, query.page, query.per_page, total, ordering,
                        {p.product_id: view.products[p.product_id] for p in items}, "elasticsearch",
                        vector is not None)

    def _exts(self, keys: frozenset[int] | set[int]) -> list[str]:
        return [e for e in self.ids.products.exts(sorted(keys)) if e is not None]
