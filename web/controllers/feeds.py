"""/customers/{id}/feed: the paginated product feed of one shopper."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import Parameter

from appliance.recommender import FeedQuery
from web.schemas import FeedOut


def _split(values: list[str] | None) -> tuple[str, ...]:
    """Accept both ?category=a&category=b and ?category=a,b."""
    return tuple(v.strip() for raw in values or [] for v in raw.split(",") if v.strip())


class FeedController(Controller):
    path = "/customers"
    tags = ["feeds"]

    @get("/{customer_id:int}/feed", operation_id="customerFeed", sync_to_thread=True)
    def feed(
        self,
        state: State,
        customer_id: Annotated[int, Parameter(ge=1)],
        page: Annotated[int, Parameter(ge=1, le=10_000)] = 1,
        per_page: Annotated[int | None, Parameter(ge=1, description="default from config feed.per_page")] = None,
        sort: Annotated[Literal["price_asc", "price_desc"] | None, Parameter(description="overrides ranking")] = None,
        category: Annotated[list[str] | None, Parameter(description="any level of the path; several allowed")] = None,
        min_price: Annotated[float | None, Parameter(ge=0)] = None,
        max_price: Annotated[float | None, Parameter(ge=0)] = None,
        in_stock: Annotated[bool | None, Parameter(description="only (un)available products")] = None,
        exclude: Annotated[list[str] | None, Parameter(description="product ids to leave out")] = None,
    ) -> FeedOut:
        """Products for this shopper, best first, with scores and pagination metadata."""
        services = state.services
        feed = services.config.feed
        per_page = min(per_page or feed.per_page, feed.max_per_page)
        excluded = frozenset(int(v) for v in _split(exclude) if v.isdigit())
        query = FeedQuery(page, per_page, sort, _split(category), min_price, max_price, in_stock, excluded)
        result = services.recommender.feed(query)
        return FeedOut.of(customer_id, result, services.config.catalog.tier_thresholds)
