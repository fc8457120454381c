"""/products: the catalog, one product or many, and nearest neighbours by vector."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Annotated

import numpy as np
from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from appliance.errors import InvalidInput, NotFound, NotReady
from appliance.types import now_utc
from web.access import Scope, needs
from web.ids import ProductPath, created, known, normalised
from web.schemas import (
    BulkResult,
    FeedItem,
    ProductFields,
    ProductIn,
    ProductOut,
    SimilarOut,
    StoredProductOut,
    each,
)


def latest(state: State, now: datetime) -> datetime:
    """The newest created_at accepted: now plus the clock skew allowed to events."""
    return now + timedelta(seconds=state.services.config.events.max_future_seconds)


@contextmanager
def _named(product_id: str) -> Iterator[None]:
    """A product missing from the catalog is named by the shop's id, not its key."""
    try:
        yield
    except NotFound:
        raise NotFound(f"product {product_id} does not exist") from None


def stored_out(state: State, product_id: str, key: int) -> StoredProductOut:
    services = state.services
    with _named(product_id):
        stored = services.catalog.store.get(key)
    return StoredProductOut(
        ProductOut.of(stored.product, services.config.catalog.tier_thresholds, product_id), stored.text,
        stored.embedded,
    )


class ProductController(Controller):
    path = "/products"
    tags = ["catalog"]
    opt = needs(Scope.SERVER)

    @put("/{product_id:str}", operation_id="putProduct", sync_to_thread=True, status_code=HTTP_200_OK)
    def put_product(
        self, state: State, product_id: ProductPath, data: JSONBody[ProductFields]
    ) -> Response[StoredProductOut]:
        """Create or replace one product; its vector is computed before the response (200, or 201 if new)."""
        now = now_utc()
        product = data.to_domain(0, latest(state, now))  # validated before its id is mapped: nothing written
        key = created(state.services.ids.products, [product_id], "product_id")[0]
        result = state.services.catalog.upsert([replace(product, product_id=key)], now, embed_now=True)
        status = HTTP_201_CREATED if result.created else HTTP_200_OK
        return Response(stored_out(state, product_id, key), status_code=status)

    @post("/", operation_id="postProducts", sync_to_thread=True, status_code=HTTP_202_ACCEPTED)
    def post_products(self, state: State, data: JSONBody[list[ProductIn]]) -> BulkResult:
        """Create or replace many products in one transaction; new lines are embedded in the background."""
        services = state.services
        if not data:
            raise InvalidInput("the body must hold at least one product", field="$")
        if len(data) > services.config.catalog.max_bulk:
            raise InvalidInput(f"at most {services.config.catalog.max_bulk} products per request", field="$")
        ids = normalised((p.product_id for p in data), "product_id")  # 12 and "12" are one product
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidInput(f"product_id {dup} appears more than once", field="product_id")
        now = now_utc()
        products = each(data, lambda p: p.to_domain(0, latest(state, now)))  # validated before ids are mapped
        keys = created(services.ids.products, ids, "product_id")
        result = services.catalog.upsert(
            [replace(p, product_id=k) for p, k in zip(products, keys, strict=True)], now, embed_now=False
        )
        if services.background:
            services.background.kick()
        return BulkResult(len(data), result.created, result.updated, result.unchanged, result.to_embed)

    @get("/{product_id:str}", operation_id="getProduct", sync_to_thread=True, opt=needs(Scope.PUBLIC))
    def get_product(self, state: State, product_id: ProductPath) -> StoredProductOut:
        """One product, its text line and whether its vector is ready."""
        return stored_out(state, product_id, known(state.services.ids.products, product_id, "product"))

    @delete("/{product_id:str}", operation_id="deleteProduct", sync_to_thread=True)
    def delete_product(self, state: State, product_id: ProductPath) -> None:
        """Remove a product from the catalog and the vector index (its events, and so its id, are kept)."""
        with _named(product_id):
            state.services.catalog.delete(known(state.services.ids.products, product_id, "product"))

    @get("/{product_id:str}/similar", operation_id="similarProducts", sync_to_thread=True, opt=needs(Scope.PUBLIC))
    def similar(
        self, state: State, product_id: ProductPath,
        k: Annotated[int | None, Parameter(ge=1, le=100, description="how many neighbours")] = None,
    ) -> SimilarOut:
        """The products nearest to this one by vector (cosine similarity), best first."""
        services = state.services
        k = k or services.config.feed.similar_k
        key = known(services.ids.products, product_id, "product")
        with _named(product_id):
            stored = services.catalog.store.get(key)
        try:
            vector = services.index.get(np.array([key]))[0]
        except KeyError:
            raise NotReady(f"product {product_id} has no vector yet (embedding: {stored.embedded})") from None
        view = services.recommender.view()
        labels, sims = services.index.query(vector, k + 1, accept=lambda label: label != key)
        items = [
            FeedItem(services.product_out(view.products[int(i)]), float(s), "similar")
            for i, s in zip(labels[:k], sims[:k], strict=True) if int(i) in view.products
        ]
        return SimilarOut(product_id, items)
