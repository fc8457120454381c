"""The storefront's widgets: bought together, related, looking similar, trending, recently viewed, and one
call for a whole page (POST /recommendations). Scores are on one 0..1 scale across all of them."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK

from appliance.errors import ApplianceError
from jobs.widget_memory import Call
from jobs.widgets import categories
from web.access import Scope, needs
from web.controllers.feeds import _split
from web.errors import problem_of
from web.ids import CustomerPath, ProductPath
from web.services import Services
from web.widget_answers import answer, category_item, serve
from web.widget_schemas import BatchIn, BatchOut, BatchResult, CategoriesOut, WidgetOut, WidgetRequest


def _filters(
    k: Annotated[int | None, Parameter(ge=1, le=100, description="how many (default widgets.k)")] = None,
    category: Annotated[list[str] | None, Parameter(description="any level of the path; several allowed")] = None,
    min_price: Annotated[float | None, Parameter(ge=0)] = None,
    max_price: Annotated[float | None, Parameter(ge=0)] = None,
    in_stock: Annotated[bool | None, Parameter(description="only (un)available products")] = None,
    exclude: Annotated[list[str] | None, Parameter(description="product ids to leave out")] = None,
    min_score: Annotated[float | None, Parameter(ge=0, le=1, description="least score (0..1)")] = None,
    explain: Annotated[bool, Parameter(description="each item's score parts")] = False,
) -> WidgetRequest:
    """The query string every widget shares, as a widget request (its model is set by the route)."""
    return WidgetRequest(
        k=k, category=list(_split(category)) or None, min_price=min_price, max_price=max_price,
        in_stock=in_stock, exclude=list(_split(exclude)) or None, min_score=min_score, explain=explain,
    )


def _asker(
    filters: WidgetRequest,
    customer_id: Annotated[str | None, Parameter(description="who asks: their purchases are left out")] = None,
) -> WidgetRequest:
    """The shared query string and who asks (the product widgets and trending)."""
    return msgspec.structs.replace(filters, customer_id=customer_id)


async def _one(state: State, request: WidgetRequest, **changes: object) -> WidgetOut:
    asked = msgspec.structs.replace(request, **changes)
    anchor = None if asked.product_id is None else str(asked.product_id)
    services: Services = state.services
    return WidgetOut(asked.model or "", await serve(services, lambda call: answer(services, asked, call)), anchor)


class WidgetController(Controller):
    path = "/"
    tags = ["widgets"]
    opt = needs(Scope.PUBLIC)  # what a storefront's browser calls
    dependencies = {"filters": Provide(_filters, sync_to_thread=False), "asked": Provide(_asker, sync_to_thread=False)}

    @get("/products/{product_id:str}/bought-together", operation_id="boughtTogether")
    async def bought_together(self, state: State, product_id: ProductPath, asked: WidgetRequest) -> WidgetOut:
        """Products carted or bought in the same sessions as this one (popular complements when none are)."""
        return await _one(state, asked, model="bought-together", product_id=product_id)

    @get("/products/{product_id:str}/related", operation_id="relatedProducts")
    async def related(self, state: State, product_id: ProductPath, asked: WidgetRequest) -> WidgetOut:
        """Products like this one: content similarity blended with what shoppers viewed together."""
        return await _one(state, asked, model="related", product_id=product_id)

    @get("/products/{product_id:str}/similar", operation_id="similarProducts")
    async def similar(self, state: State, product_id: ProductPath, asked: WidgetRequest) -> WidgetOut:
        """Looking similar: the nearest products by vector (content only), with the filters applied."""
        return await _one(state, asked, model="looking-similar", product_id=product_id)

    @get("/trending", operation_id="trending")
    async def trending(self, state: State, asked: WidgetRequest) -> WidgetOut:
        """Products whose recent shoppers rise against their own baseline; `category` for "trending in X"."""
        return await _one(state, asked, model="trending")

    @get("/trending/categories", operation_id="trendingCategories")
    async def trending_categories(
        self, state: State,
        k: Annotated[int | None, Parameter(ge=1, le=100, description="how many (default widgets.k)")] = None,
        category: Annotated[str | None, Parameter(max_length=200, description="only categories under this one")] = None,
        explain: Annotated[bool, Parameter(description="each category's trend figures")] = False,
    ) -> CategoriesOut:
        """Categories whose distinct shoppers in the last `widgets.trending_recent_hours` rise against their own
        baseline (the measure of trending products); categories hidden by a rule are left out."""
        services: Services = state.services
        config = services.config.widgets
        size = min(k or config.k, config.max_k)
        found = await serve(services, lambda call: categories(services.widgets, call, size, category))
        return CategoriesOut("trending-categories", [category_item(c, explain) for c in found], category)

    @get("/customers/{customer_id:str}/recently-viewed", operation_id="recentlyViewed")
    async def recently_viewed(self, state: State, customer_id: CustomerPath, filters: WidgetRequest) -> WidgetOut:
        """The products this shopper viewed or clicked, newest first."""
        return await _one(state, filters, model="recently-viewed", customer_id=customer_id)

    @post("/recommendations/bought-together", operation_id="cartBoughtTogether",
          status_code=HTTP_200_OK)
    async def cart(self, state: State, data: JSONBody[WidgetRequest]) -> WidgetOut:
        """Bought together for a whole cart (`product_ids`), the cart's own products left out."""
        return await _one(state, data, model="bought-together")

    @post("/recommendations", operation_id="recommendations", status_code=HTTP_200_OK)
    async def batch(self, state: State, data: JSONBody[BatchIn]) -> BatchOut:
        """Several widgets for one page in one call: each answered in order, or given its own error."""
        services: Services = state.services
        results: list[BatchResult] = []

        def work(call: Call) -> BatchOut:  # entered again in a thread if a request would block: keeps what is done
            for request in data.requests[len(results):]:
                try:
                    results.append(BatchResult(request.model, 200, answer(services, request, call)))
                except ApplianceError as exc:
                    status, body = problem_of(exc)
                    results.append(BatchResult(request.model, status, error=body))
            return BatchOut(results)

        return await serve(services, work)
