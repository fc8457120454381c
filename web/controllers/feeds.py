"""/customers/{id}: the paginated product feed of one shopper, and erasing a shopper."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

import numpy as np
from litestar import Controller, delete, get
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from appliance.errors import InvalidInput
from appliance.recommender import FeedPage, FeedQuery, Personal
from appliance.types import Scored, now_utc
from storage.elastic import search_feed_page
from web.schemas import Erased, FeedOut
from web.services import Services

CustomerId = Annotated[int, Parameter(ge=1, description="the shop's customer id")]


def _split(values: list[str] | None) -> tuple[str, ...]:
    """Accept both ?category=a&category=b and ?category=a,b."""
    return tuple(v.strip() for raw in values or [] for v in raw.split(",") if v.strip())


def personal(services: Services, customer_id: int) -> Personal:
    """What the feed knows of the shopper: their purchases, and their vector (while their newest interaction is
    inside the serving window, when one is set)."""
    purchased = frozenset(services.events.purchased(customer_id))
    stored = services.users.get(customer_id)
    start = services.updater.window_start(now_utc())
    if stored is None or (start is not None and stored.last_event_at < start):
        return Personal(None, purchased)
    model = services.serving.get().model
    weight = 0.0 if model is None else model.popularity_weight.item()
    return Personal(stored.vector, purchased, weight)


def elastic_feed(services: Services, query: FeedQuery, who: Personal, method: str) -> FeedPage:
    """The same feed ranked inside the shop's Elasticsearch: script_score (exact cosine + 1.0, the source
    design) or knn (approximate, HNSW); popularity / price order without a vector."""
    if not services.elastic.enabled:
        raise InvalidInput("elasticsearch is not configured ([elasticsearch] enabled = false)", field="backend")
    vector = who.vector if query.sort is None else None
    if services.config.feed.exclude_purchased:
        query = replace(query, exclude=query.exclude | who.purchased)
    hits, total = search_feed_page(
        services.elastic.client, services.config.elasticsearch, vector, method=method, filters=query,
        page=query.page, per_page=query.per_page, fallback_sort=query.sort,
    )
    products = services.recommender.view().products
    source = "personal" if vector is not None else ("price" if query.sort else "popular")
    items = [Scored(pid, score + 1.0 if vector is not None else score, source) for pid, score in hits
             if pid in products]
    ordering = "personal" if vector is not None else (query.sort or "popular")
    return FeedPage(items, query.page, query.per_page, total, ordering, {s.product_id: products[s.product_id]
                    for s in items}, "elasticsearch", vector is not None)


class CustomerController(Controller):
    path = "/customers"
    tags = ["customers"]

    @get("/{customer_id:int}/feed", operation_id="customerFeed", sync_to_thread=True)
    def feed(
        self,
        state: State,
        customer_id: CustomerId,
        page: Annotated[int, Parameter(ge=1, le=10_000)] = 1,
        per_page: Annotated[int | None, Parameter(ge=1, description="default from config feed.per_page")] = None,
        sort: Annotated[Literal["price_asc", "price_desc"] | None, Parameter(description="overrides ranking")] = None,
        category: Annotated[list[str] | None, Parameter(description="any level of the path; several allowed")] = None,
        min_price: Annotated[float | None, Parameter(ge=0)] = None,
        max_price: Annotated[float | None, Parameter(ge=0)] = None,
        in_stock: Annotated[bool | None, Parameter(description="only (un)available products")] = None,
        exclude: Annotated[list[str] | None, Parameter(description="product ids to leave out")] = None,
        min_score: Annotated[float | None, Parameter(ge=0, le=2, description="least personal score")] = None,
        feed_id: Annotated[str | None, Parameter(max_length=64, description="from page 1: same order")] = None,
        backend: Annotated[Literal["appliance", "elasticsearch"], Parameter(description="who ranks")] = "appliance",
        method: Annotated[Literal["script_score", "knn"], Parameter(description="elasticsearch only")] = "script_score",
    ) -> FeedOut:
        """Products for this shopper, best first: nearest to their vector (cosine + 1.0) mixed with popular
        products and new arrivals; popularity then recency without a vector; `sort` overrides both."""
        services: Services = state.services
        feed = services.config.feed
        per_page = min(per_page or feed.per_page, feed.max_per_page)
        excluded = frozenset(int(v) for v in _split(exclude) if v.isdigit())
        query = FeedQuery(
            page, per_page, sort, _split(category), min_price, max_price, in_stock, excluded, min_score, feed_id
        )
        who = personal(services, customer_id)
        if backend == "elasticsearch":
            result = elastic_feed(services, query, who, method)
        else:
            result = services.recommender.feed(query, who)
        return FeedOut.of(customer_id, result, services.config.catalog.tier_thresholds)

    @delete("/{customer_id:int}", operation_id="eraseCustomer", sync_to_thread=True, status_code=HTTP_200_OK)
    def erase(self, state: State, customer_id: CustomerId) -> Erased:
        """Erase a shopper (a privacy request): events, queued messages, vector; says what was removed."""
        services: Services = state.services
        with services.db.write() as cur:
            events = services.events.erase_in(cur, customer_id)
            messages = services.queue.purge_customer_in(cur, customer_id)
        vectors = services.users.delete([customer_id])
        services.user_mirror.index.remove(np.array([customer_id]))
        services.elastic.mark_users([customer_id])
        return Erased(customer_id, events, messages, vectors)
