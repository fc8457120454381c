"""/customers/{id}: the paginated product feed of one shopper, erasing a shopper, merging an anonymous id."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK

from appliance.ids import shop_id
from appliance.pipeline import FeedQuery
from appliance.types import now_utc
from jobs.elastic_feed import ElasticFeed
from jobs.identity import IdentityParts, Merged, merge_customers
from web.access import Scope, needs
from web.ids import CustomerPath, existing
from web.schemas import Erased, FeedOut, MergeIn, first_position
from web.services import Services
from web.telemetry import note


def _split(values: list[str] | None) -> tuple[str, ...]:
    """Accept both ?category=a&category=b and ?category=a,b."""
    return tuple(v.strip() for raw in values or [] for v in raw.split(",") if v.strip())


class CustomerController(Controller):
    path = "/customers"
    tags = ["customers"]
    opt = needs(Scope.SERVER)

    @get("/{customer_id:str}/feed", operation_id="customerFeed", opt=needs(Scope.PUBLIC))
    async def feed(
        self,
        state: State,
        request: Request,
        customer_id: CustomerPath,
        page: Annotated[int, Parameter(ge=1, le=10_000)] = 1,
        per_page: Annotated[int | None, Parameter(ge=1, description="default from config feed.per_page")] = None,
        sort: Annotated[Literal["price_asc", "price_desc"] | None, Parameter(description="overrides ranking")] = None,
        category: Annotated[list[str] | None, Parameter(description="any level of the path; several allowed")] = None,
        min_price: Annotated[float | None, Parameter(ge=0)] = None,
        max_price: Annotated[float | None, Parameter(ge=0)] = None,
        in_stock: Annotated[bool | None, Parameter(description="only (un)available products")] = None,
        exclude: Annotated[list[str] | None, Parameter(description="product ids to leave out")] = None,
        min_score: Annotated[float | None, Parameter(
            ge=0, le=1, description="least score of any item, on the 0..1 scale every source shares")] = None,
        feed_id: Annotated[str | None, Parameter(max_length=64, description="from page 1: same order")] = None,
        backend: Annotated[Literal["appliance", "elasticsearch"], Parameter(description="who ranks")] = "appliance",
        method: Annotated[Literal["script_score", "knn"], Parameter(description="elasticsearch only")] = "script_score",
        explain: Annotated[bool, Parameter(description="each item's score parts")] = False,
    ) -> FeedOut:
        """Products for this shopper: their nearest products mixed with popular products and new arrivals
        (70/20/10 by default); popularity then recency without a vector; `sort` overrides both. Every `score`
        is in 0..1 whatever the source (personal: similarity (cosine + 1) / 2; popular: popularity relative
        to the most popular product; new: freshness 1 - age / feed.new_arrival_days), moved by boost and bury
        rules; `reason` says why an item is there. Active merchandising rules apply (hidden products never
        appear, pins take their feed position once, boosts and buries reorder), then diversity
        (widgets.max_in_row). A `feed_id` keeps page 1's order and rules for its later pages."""
        services: Services = state.services
        feed = services.config.feed
        per_page = min(per_page or feed.per_page, feed.max_per_page)
        excluded = existing(services.ids.products, _split(exclude), "exclude")
        query = FeedQuery(
            page, per_page, sort, _split(category), min_price, max_price, in_stock, excluded, min_score, feed_id,
            explain,
        )
        feeds = services.feeds
        key = services.ids.customers.key(customer_id)  # a shopper never seen gets the non-personal feed
        if backend == "elasticsearch":
            elastic = ElasticFeed(services.config, services.elastic, services.ids, feeds, services.recommender,
                                  now_utc)
            result = await anyio.to_thread.run_sync(elastic.page, query, key, method)
        else:  # from memory: ~0.1 ms of numpy and dicts, cheaper than a thread hop; else a DuckDB read or an
            # index lookup first, off the event loop
            result = feeds.from_memory(key, query) or await anyio.to_thread.run_sync(feeds.page, key, query)
        rid = services.impressions.served(
            customer_id, "feed", result.items, first_position(result), services.serving.get().version
        )
        note(request, recommendation_id=rid)
        return FeedOut.of(customer_id, result, services.product_out, rid, explain)

    @delete("/{customer_id:str}", operation_id="eraseCustomer", sync_to_thread=True, status_code=HTTP_200_OK)
    def erase(self, state: State, customer_id: CustomerPath) -> Erased:
        """Erase a shopper (a privacy request): events, queued messages, vector, and the id's mapping; says what
        was removed."""
        erased = state.services.eraser.erase(customer_id)
        return Erased(erased.customer_id, erased.events, erased.queued_messages, erased.vectors, erased.impressions)

    @post("/{customer_id:str}/merge", operation_id="mergeCustomer", sync_to_thread=True, status_code=HTTP_200_OK)
    def merge(self, state: State, customer_id: CustomerPath, data: JSONBody[MergeIn]) -> Merged:
        """Merge an anonymous id into this customer (a visitor who logs in): its events and purchases move
        here (the customer is created if new), its vector and queued messages are dropped, the anonymous id
        is forgotten and this customer's vector recomputed. A repeat moves nothing (200 with zeros)."""
        services: Services = state.services
        parts = IdentityParts(services.db, services.ids, services.events, services.queue, services.updater,
                              services.impressions, services.widgets.recent)
        return merge_customers(parts, customer_id, shop_id(data.anonymous_id, "anonymous_id"))
