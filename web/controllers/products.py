"""/products: the catalog, one product or many, and nearest neighbours by vector."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from appliance.errors import InvalidInput, NotReady
from appliance.types import now_utc
from web.schemas import (
    BulkResult,
    FeedItem,
    ProductFields,
    ProductIn,
    ProductOut,
    SimilarOut,
    StoredProductOut,
)

ProductId = Annotated[int, Parameter(ge=1, description="the shop's product id")]


def stored_out(state: State, product_id: int) -> StoredProductOut:
    services = state.services
    stored = services.catalog.store.get(product_id)
    return StoredProductOut(
        ProductOut.of(stored.product, services.config.catalog.tier_thresholds), stored.text, stored.embedded
    )


class ProductController(Controller):
    path = "/products"
    tags = ["catalog"]

    @put("/{product_id:int}", operation_id="putProduct", sync_to_thread=True, status_code=HTTP_200_OK)
    def put_product(
        self, state: State, product_id: ProductId, data: JSONBody[ProductFields]
    ) -> Response[StoredProductOut]:
        """Create or replace one product; its vector is computed before the response (200, or 201 if new)."""
        result = state.services.catalog.upsert([data.to_domain(product_id)], now_utc(), embed_now=True)
        status = HTTP_201_CREATED if result.created else HTTP_200_OK
        return Response(stored_out(state, product_id), status_code=status)

    @post("/", operation_id="postProducts", sync_to_thread=True, status_code=HTTP_202_ACCEPTED)
    def post_products(self, state: State, data: JSONBody[list[ProductIn]]) -> BulkResult:
        """Create or replace many products in one transaction; new lines are embedded in the background."""
        services = state.services
        if not data:
            raise InvalidInput("the body must hold at least one product", field="$")
        if len(data) > services.config.catalog.max_bulk:
            raise InvalidInput(f"at most {services.config.catalog.max_bulk} products per request", field="$")
        ids = [p.product_id for p in data]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidInput(f"product_id {dup} appears more than once", field="product_id")
        result = services.catalog.upsert([p.to_product() for p in data], now_utc(), embed_now=False)
        if services.background:
            services.background.kick()
        return BulkResult(len(data), result.created, result.updated, result.unchanged, result.to_embed)

    @get("/{product_id:int}", operation_id="getProduct", sync_to_thread=True)
    def get_product(self, state: State, product_id: ProductId) -> StoredProductOut:
        """One product, its text line and whether its vector is ready."""
        return stored_out(state, product_id)

    @delete("/{product_id:int}", operation_id="deleteProduct", sync_to_thread=True)
    def delete_product(self, state: State, product_id: ProductId) -> None:
        """Remove a product from the catalog and the vector index (its events are kept)."""
        state.services.catalog.delete(product_id)

    @get("/{product_id:int}/similar", operation_id="similarProducts", sync_to_thread=True)
    def similar(
        self, state: State, product_id: ProductId,
        k: Annotated[int | None, Parameter(ge=1, le=100, description="how many neighbours")] = None,
    ) -> SimilarOut:
        """The products nearest to this one by vector (cosine similarity), best first."""
        services = state.services
        k = k or services.config.feed.similar_k
        stored = services.catalog.store.get(product_id)
        try:
            vector = services.index.get(np.array([product_id]))[0]
        except KeyError:
            raise NotReady(f"product {product_id} has no vector yet (embedding: {stored.embedded})") from None
        view = services.recommender.view()
        labels, sims = services.index.query(vector, k + 1, accept=lambda label: label != product_id)
        items = [
            FeedItem(services.product_out(view.products[int(i)]), float(s), "similar")
            for i, s in zip(labels[:k], sims[:k], strict=True) if int(i) in view.products
        ]
        return SimilarOut(product_id, items)
