"""Wire types (msgspec Structs), separate from the domain types; the CLI importers decode with them too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec

from appliance.errors import InvalidInput
from appliance.recommender import FeedPage
from appliance.text import price_tier
from appliance.types import Product, utc_naive
from storage.ids import IdMap
from web.ids import WireId, ext

EventName = Literal[
    "product_viewed", "product_clicked", "product_added_to_cart",
    "product_favorited", "product_shared", "product_purchased",
]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
CategoryPath = Annotated[list[Text], msgspec.Meta(min_length=1, max_length=5)]


class ProductFields(msgspec.Struct, forbid_unknown_fields=True):
    """A product as a shop sends it (the id is in the path for PUT)."""

    name: Text
    category_path: CategoryPath  # parent -> category -> subcategory, e.g. ["Shoes", "Sneakers", "Running"]
    merchant: Text | None = None
    color: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    price: Annotated[float, msgspec.Meta(ge=0)] | None = None
    in_stock: bool = True
    created_at: datetime | None = None

    def to_domain(self, product_id: int) -> Product:
        """The product under its key inside (see web/ids.py)."""
        return Product(
            product_id=product_id, name=self.name.strip(), merchant=self.merchant, category_path=tuple(
                self.category_path), color=self.color, price=self.price, in_stock=self.in_stock,
            created_at=utc_naive(self.created_at) if self.created_at else None,
        )


class ProductIn(ProductFields, forbid_unknown_fields=True, kw_only=True):
    """A product in a bulk upload or an import file."""

    product_id: WireId


class ProductOut(msgspec.Struct):
    product_id: str
    name: str
    merchant: str | None
    category_path: list[str]
    color: str | None
    price: float | None
    price_tier: str | None
    in_stock: bool
    created_at: datetime | None

    @classmethod
    def of(cls, p: Product, thresholds: tuple[float, ...], product_id: str) -> ProductOut:
        """`product_id` is the shop's id of the product (`p.product_id` is its key inside)."""
        return cls(
            product_id, p.name, p.merchant, list(p.category_path), p.color, p.price,
            price_tier(p.price, thresholds), p.in_stock, p.created_at.replace(tzinfo=UTC) if p.created_at else None,
        )


class StoredProductOut(msgspec.Struct):
    product: ProductOut
    text: str  # the line the vector is embedded from
    embedded: bool  # False while its vector is still being computed


class BulkResult(msgspec.Struct):
    received: int
    created: int
    updated: int
    unchanged: int
    to_embed: int  # lines queued for embedding in the background


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """The SQS message body, plus an optional timestamp (default: when it is received)."""

    customer_id: WireId
    product_id: WireId
    event_name: EventName
    timestamp: datetime | None = None

    def ts(self, now: datetime, max_future_seconds: float) -> datetime:
        """When it happened (naive UTC); InvalidInput when too far in the future."""
        ts = utc_naive(self.timestamp) if self.timestamp else now
        if ts > now + timedelta(seconds=max_future_seconds):
            raise InvalidInput(f"timestamp {ts.isoformat()} is in the future", field="timestamp")
        return ts


class EventsAccepted(msgspec.Struct):
    accepted: int
    event_ids: list[int]


class FeedItem(msgspec.Struct):
    product: ProductOut
    score: float
    source: str  # why it is there: personal / popular / new / price / similar


class FeedOut(msgspec.Struct):
    customer_id: str
    ordering: str  # personal / popular / price_asc / price_desc
    personalized: bool
    feed_id: str  # send it with the next pages: they continue this order with no duplicates or gaps
    page: int
    per_page: int
    total: int
    pages: int
    items: list[FeedItem]

    @classmethod
    def of(cls, customer_id: str, page: FeedPage, thresholds: tuple[float, ...], products: IdMap) -> FeedOut:
        items = [
            FeedItem(ProductOut.of(page.products[s.product_id], thresholds, ext(products, s.product_id)), s.score,
                     s.source)
            for s in page.items
        ]
        return cls(
            customer_id, page.ordering, page.personalized, page.feed_id, page.page, page.per_page, page.total,
            page.pages, items,
        )


class Erased(msgspec.Struct):
    customer_id: str
    events: int  # events deleted
    queued_messages: int  # queue messages deleted (live and dead-lettered)
    vectors: int  # user vectors deleted (0 or 1)


class MergeIn(msgspec.Struct, forbid_unknown_fields=True):
    """The anonymous id (e.g. a cookie's) whose history now belongs to the customer in the path."""

    anonymous_id: WireId


class QueueOut(msgspec.Struct):
    depth: int  # visible now
    in_flight: int
    dead_lettered: int
    oldest_age_seconds: float
    processed: int  # messages this process's consumer has processed since start


class DeadLetterOut(msgspec.Struct):
    message_id: str
    body: dict
    reason: str | None
    receive_count: int


class Redriven(msgspec.Struct):
    moved: int


class ModelOut(msgspec.Struct):
    version: str  # the serving tower's version, or "mean" for the no-model fallback
    fallback: bool
    fallback_reason: str | None
    meta: dict | None  # the checkpoint's own description: config, training window, metrics
    candidates: list[dict]  # every checkpoint with its status (serving / rejected / candidate) and metrics


class JobRunOut(msgspec.Struct):
    started_at: datetime
    seconds: float
    outcome: str  # ok / failed
    detail: str | None

    @classmethod
    def of(cls, run) -> JobRunOut:
        return cls(run.started_at.replace(tzinfo=UTC), run.seconds, run.outcome, run.detail)


class JobOut(msgspec.Struct):
    name: str
    schedule: str
    next_run: datetime | None
    running: bool
    last_runs: list[JobRunOut]  # newest first


class SyncOut(msgspec.Struct):
    enabled: bool
    pending: int
    failing: int  # pending items the cluster refused last time
    lag_seconds: float | None  # age of the oldest pending change
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class SimilarOut(msgspec.Struct):
    product_id: str
    items: list[FeedItem]


class Health(msgspec.Struct):
    status: str  # live / ready / starting
    products: int | None = None
    events: int | None = None
    pending_embeddings: int | None = None
    indexed: int | None = None
    detail: str | None = None
