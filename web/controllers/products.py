"""/products: the catalog, one product or many (the product widgets are in widgets.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import anyio
from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from appliance.errors import InvalidInput, NotFound
from appliance.types import now_utc
from storage.catalog import StoredProduct
from web.access import Scope, needs
from web.ids import ProductPath, created, known, normalised
from web.schemas import (
    BulkResult,
    ProductFields,
    ProductIn,
    ProductOut,
    StoredProductOut,
    each,
)
from web.services import Services


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
        return _out(services, product_id, services.catalog.store.get(key))


def _out(services: Services, product_id: str, stored: StoredProduct) -> StoredProductOut:
    return StoredProductOut(
        ProductOut.of(stored.product, services.config.catalog.tier_thresholds, product_id), stored.text,
        stored.embedded,
    )


class ProductController(Controller):
    path = "/products"
    tags = ["catalog"]
    opt = needs(Scope.SERVER)

    @put("/{product_id:str}", operation_id="putProduct", status_code=HTTP_200_OK)
    async def put_product(
        self, state: State, product_id: ProductPath, data: JSONBody[ProductFields]
    ) -> Response[StoredProductOut]:
        """Create or replace one product; its vector is computed before the response (200, or 201 if new)."""
        services = state.services
        now = now_utc()
        product = data.to_domain(0, latest(state, now))  # validated before its id is mapped: nothing written
        ids = normalised([product_id], "product_id")
        if services.ids.products.knows(ids):  # a dict look-up
            key = services.ids.products.keys(ids)[0]
        else:  # its key is created first (a DuckDB write): off the event loop
            key = (await anyio.to_thread.run_sync(created, services.ids.products, ids, "product_id"))[0]
        # written with the edits arriving meanwhile in one transaction by the catalog writer thread (jobs/edits.py):
        # this request holds no thread while it waits
        with _named(product_id):
            edited = await asyncio.wrap_future(services.edits.submit(replace(product, product_id=key), now))
        status = HTTP_201_CREATED if edited.created else HTTP_200_OK
        return Response(_out(services, product_id, edited.stored), status_code=status)

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
