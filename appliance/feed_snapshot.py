"""What a feed_id keeps between its pages (appliance/recommender.py): its snapshot, and the catalogue of popular
and new-arrival sources that every snapshot made from one (ranking, compiled rules) shares.

A new ranking comes with every popularity refresh and every write that creates a product, and a snapshot lives
`feed.snapshot_seconds`, so snapshots outlive many rankings. Each ranking's arrays span the whole catalog (~29
bytes a product); a catalogue that new feeds no longer use keeps only the heads of its sources, enough for the
pages up to `feed.snapshot_depth` (appliance/feed_order.py `Catalogued.head`), and only the newest
`feed.snapshot_orders` of them keep that (an upload makes a ranking a write). Its pages are then the same as
before; a page that would need more, or of a retired catalogue, is answered as an expired feed_id (`Beyond`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import msgspec
import numpy as np
from msgspec.structs import replace

from appliance.catalog_view import CatalogView
from appliance.feed_order import Catalogued, Nearest, Sources
from appliance.merch import Merch
from appliance.ranking import Ranking, ServingPrior, positions
from appliance.types import NO_IDS


class Personal(msgspec.Struct, frozen=True, gc=False):
    """What the feed knows about one shopper. Untracked by the cyclic collector (a snapshot whose nearest
    products may still be extended keeps it for `feed.snapshot_seconds`): `history` must be a callable that
    refers to nothing holding a snapshot (jobs/feed.py `Recent`), so no cycle runs through it."""

    vector: np.ndarray | None  # (D,) unit vector in the product space, None: not personalised
    purchased: frozenset[int] = NO_IDS  # left out when the feed is configured to exclude them
    popularity_weight: float = 0.0  # the serving tower's prior: nearest products rank by cosine + this * log(1 + pop)
    key: Hashable = None  # names this vector (e.g. customer and update time): its nearest products are cached
    history: Callable[[], Sequence[int]] = tuple  # the products of their recent history (read on a cache miss)


class Catalogue(msgspec.Struct, gc=False):
    """The popular and new-arrival sources of one (ranking, compiled rules) and the serving prior, shared by
    every snapshot made from them. Untracked by the cyclic collector, as the snapshots referring to it."""

    sources: Sources  # with no personal source
    prior: ServingPrior | None
    superseded: bool = False

    @classmethod
    def of(cls, ranking: Ranking, merch: Merch, view: CatalogView, shares: tuple[float, float, float]) -> Catalogue:
        popular = Catalogued(ranking.order, ranking.rank, ranking.popularity, ranking.popularity, "popularity",
                             scale=ranking.top)  # scores: popularity / top, divided as they are read
        new = Catalogued(ranking.new_rows, None, ranking.freshness, ranking.freshness, "freshness",
                         ranking.new_sorted, ranking.new_where)  # by position, its lookup made with the ranking
        if merch.moves:  # boosts and buries reorder: popularity (then newest, id) by the moved score
            base = ranking.popularity / ranking.top
            n = len(base)
            score = merch.rescore(np.arange(n), base)
            order = np.lexsort((view.ids_all[:n], -view.created_all[:n], -score))
            popular = Catalogued(order, positions(order), score, base, "popularity")
            fresh = merch.rescore(ranking.new_rows, ranking.freshness)
            at = np.argsort(-fresh, kind="stable")
            new = Catalogued.by_position(ranking.new_rows[at], fresh[at], ranking.freshness[at], "freshness")
        return cls(Sources(merch, popular, new, None, shares), ranking.prior)

    def supersede(self, rows: int) -> None:
        """New feeds come from another catalogue: keep the first `rows` of each source and no prior. What it
        holds then no longer grows with the catalog, however many rankings its snapshots outlive. A page
        already reading the whole sources goes on with them (the attribute is replaced, not the arrays)."""
        sources = self.sources
        hidden = sources.merch.hidden
        self.sources = replace(sources, popular=sources.popular.head(rows, hidden),
                               new=sources.new.head(rows, hidden))
        self.superseded = True
        self.prior = None  # last: `Snapshot.prior` reads it before `superseded`

    def retire(self) -> None:
        """Too many newer catalogues: keep nothing; every page of its snapshots answers as an expired feed_id."""
        sources = self.sources
        self.sources = replace(sources, popular=sources.popular.emptied(), new=sources.new.emptied())


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    """Everything a feed order is computed from, so later pages are computed from the same inputs (the rules
    active when page 1 was asked included: a rule written meanwhile applies to new feed_ids). One per feed_id,
    kept `feed.snapshot_seconds`: untracked by the cyclic collector, as its sources and `Personal` are (each
    young pass that a tracked snapshot survived moved it on to be walked by every middle and full pass)."""

    catalogue: Catalogue
    nearest: Nearest | None  # the shopper's own source, None: not personal
    purchased: frozenset[int]
    created: float
    shallow: Personal | None = None  # whose nearest products these are while the list may be extended, else None

    def sources(self) -> Sources:
        sources = self.catalogue.sources
        return sources if self.nearest is None else replace(sources, nearest=self.nearest)

    def prior(self, current: Callable[[], ServingPrior | None]) -> ServingPrior | None:
        """The serving prior its personal source was ordered with; `current()`'s once superseded (a deeper
        lookup then orders only the products it adds, after the earlier ones, with today's prior)."""
        prior = self.catalogue.prior
        return current() if prior is None and self.catalogue.superseded else prior
