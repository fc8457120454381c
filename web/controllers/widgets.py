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
from web.access import Scope, needs
from web.controllers.feeds import _split
from web.errors import problem_of
from web.ids import CustomerPath, ProductPath
from web.services import Services
from web.widget_answers import answer
from web.widget_schemas import BatchIn, BatchOut, BatchResult, WidgetOut, WidgetRequest


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


def _one(state: State, request: WidgetRequest, **changes: object) -> WidgetOut:
    asked = msgspec.structs.replace(request, **changes)
    anchor = None if asked.product_id is None else str(asked.product_id)
    return WidgetOut(asked.model or "", answer(state.services, asked), anchor)


class WidgetController(Controller):
    path = "/"
    tags = ["widgets"]
    opt = needs(Scope.PUBLIC)  # what a storefront's browser calls
    dependencies = {"filters": Provide(_filters, sync_to_thread=False), "asked": Provide(_asker, sync_to_thread=False)}

    @get("/products/{product_id:str}/bought-together", operation_id="boughtTogether", sync_to_thread=True)
    def bought_together(self, state: State, product_id: ProductPath, asked: WidgetRequest) -> WidgetOut:
        """Products carted or bought in the same sessions as this one (popular complements when none are)."""
        return _one(state, asked, model="bought-together", product_id=product_id)

    @get("/products/{product_id:str}/related", operation_id="relatedProducts", sync_to_thread=True)
    def related(self, state: State, product_id: ProductPath, asked: WidgetRequest) -> WidgetOut:
        """Products like this one: content similarity blended with what shoppers viewed together."""
        return _one(state, asked, model="related", product_id=product_id)

    @get("/products/{product_id:str}/similar", operation_id="similarProducts", sync_to_thread=True)
    def similar(self, state: State, product_id: ProductPath, asked: WidgetRequest) -> WidgetOut:
        """Looking similar: the nearest products by vector (content only), with the filters applied."""
        return _one(state, asked, model="looking-similar", product_id=product_id)

    @get("/trending", operation_id="trending", sync_to_thread=True)
    def trending(self, state: State, asked: WidgetRequest) -> WidgetOut:
        """Products whose recent shoppers rise against their own baseline; `category` for "trending in X"."""
        return _one(state, asked, model="trending")

    @get("/customers/{customer_id:str}/recently-viewed", operation_id="recentlyViewed", sync_to_thread=True)
    def recently_viewed(self, state: State, customer_id: CustomerPath, filters: WidgetRequest) -> WidgetOut:
        """The products this shopper viewed or clicked, newest first."""
        return _one(state, filters, model="recently-viewed", customer_id=customer_id)

    @post("/recommendations/bought-together", operation_id="cartBoughtTogether", sync_to_thread=True,
          status_code=HTTP_200_OK)
    def cart(self, state: State, data: JSONBody[WidgetRequest]) -> WidgetOut:
        """Bought together for a whole cart (`product_ids`), the cart's own products left out."""
        return _one(state, data, model="bought-together")

    @post("/recommendations", operation_id="recommendations", sync_to_thread=True, status_code=HTTP_200_OK)
    def batch(self, state: State, data: JSONBody[BatchIn]) -> BatchOut:
        """Several widgets for one page in one call: each answered in order, or given its own error."""
        services: Services = state.services
        results = []
        for request in data.requests:
            try:
                results.append(BatchResult(request.model, 200, answer(services, request)))
            except ApplianceError as exc:
                status, body = problem_of(exc)
                results.append(BatchResult(request.model, status, error=body))
        return BatchOut(results)
