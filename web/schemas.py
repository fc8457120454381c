"""Wire types (msgspec Structs), separate from the domain types; the CLI importers decode with them too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal, TypeVar

import msgspec

from appliance.errors import InvalidInput
from appliance.pipeline import FeedPage
from appliance.text import price_tier
from appliance.types import Product, utc_naive
from storage.ids import IdMap
from web.ids import WireId, ext

EventName = Literal[
    "product_viewed", "product_clicked", "product_added_to_cart",
    "product_favorited", "product_shared", "product_purchased",
]
# Printable text: no control characters, and at least one character that is not white space.
_PRINTABLE = "[^\\x00-\\x1f\\x7f-\\x9f]"
_VISIBLE = "[^\\s\\x00-\\x1f\\x7f-\\x9f]"
_TEXT, _COLOR = f"^{_PRINTABLE}*{_VISIBLE}{_PRINTABLE}*$", f"^{_PRINTABLE}*$"
_MOMENT = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
_KEY = "^[\\x21-\\x7e]+(?![\\s\\S])"  # printable ASCII without spaces, to the end (no trailing newline)
PATTERNS = {  # what a pattern means, for error messages (web/errors.py)
    _TEXT: "printable text with at least one visible character (no control characters)",
    _COLOR: "printable text (no control characters)",
    _MOMENT: "an ISO 8601 date and time, e.g. 2026-01-01T10:00:00Z",
    _KEY: "printable ASCII characters without spaces",
}
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=_TEXT, description=PATTERNS[_TEXT])]
Color = Annotated[str, msgspec.Meta(max_length=100, pattern=_COLOR, description=PATTERNS[_COLOR])]
CategoryPath = Annotated[list[Text], msgspec.Meta(max_length=5, extra_json_schema={"extra": {
    "items": msgspec.json.schema(Text),  # Litestar's OpenAPI leaves out the items' own constraints
}})]
# Times are ISO 8601 strings (RFC 3339; UTC when no offset), never numbers; bounded by `moment`.
Moment = Annotated[str, msgspec.Meta(
    min_length=19, max_length=40, pattern=_MOMENT,
    description="ISO 8601 date and time, e.g. 2026-01-01T10:00:00Z (UTC when no offset), from 1970 to now",
    extra_json_schema={"extra": {"format": "date-time"}},
)]
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
S = TypeVar("S")
T = TypeVar("T")


def moment(text: str, field: str, latest: datetime) -> datetime:
    """An ISO 8601 string as naive UTC, within 1970-01-01 .. `latest` (naive UTC); InvalidInput otherwise."""
    try:
        parsed = msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        raise InvalidInput(f"{field} must be an ISO 8601 date and time, e.g. 2026-01-01T10:00:00Z", field) from None
    aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if aware < EARLIEST:
        raise InvalidInput(f"{field} {text} is before 1970", field=field)
    if aware > latest.replace(tzinfo=UTC):
        raise InvalidInput(f"{field} {text} is in the future", field=field)
    return utc_naive(aware)


def each(items: Sequence[S], convert: Callable[[S], T], listed: bool = True) -> list[T]:
    """`convert` every item; an InvalidInput names the item's place in the list, e.g. `[3].timestamp`."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(convert(item))
        except InvalidInput as exc:
            raise InvalidInput(str(exc), field=f"[{i}].{exc.field}" if listed else exc.field) from None
    return out


class ProductFields(msgspec.Struct, forbid_unknown_fields=True):
    """A product as a shop sends it (the id is in the path for PUT)."""

    name: Text
    # parent -> category -> subcategory, e.g. ["Shoes", "Sneakers", "Running"]; empty or absent: no category tree
    category_path: CategoryPath = []
    merchant: Text | None = None
    color: Color | None = None
    price: Annotated[float, msgspec.Meta(ge=0, le=1e15)] | None = None
    in_stock: bool = True
    created_at: Moment | None = None

    def to_domain(self, product_id: int, latest: datetime) -> Product:
        """The product under its key inside (see web/ids.py); `latest`: the newest created_at accepted (now +
        the allowed clock skew)."""
        return Product(
            product_id=product_id, name=self.name.strip(), merchant=self.merchant, category_path=tuple(
                self.category_path), color=self.color, price=self.price, in_stock=self.in_stock,
            created_at=moment(self.created_at, "created_at", latest) if self.created_at else None,
        )


class ProductIn(ProductFields, forbid_unknown_fields=True, kw_only=True):
    """A product in a bulk upload or an import file."""

    product_id: WireId


class ProductOut(msgspec.Struct, gc=False):
    """gc=False: the feeds' cache keeps one per product shown (100k in a large shop); untracked, they cost the
    cyclic collector's full passes nothing (none of its fields can hold a reference back to it)."""

    product_id: str
    name: str
    merchant: str | None
    category_path: tuple[str, ...]
    color: str | None
    price: float | None
    price_tier: str | None
    in_stock: bool
    created_at: datetime | None

    @classmethod
    def of(cls, p: Product, thresholds: tuple[float, ...], product_id: str) -> ProductOut:
        """`product_id` is the shop's id of the product (`p.product_id` is its key inside)."""
        return cls(
            product_id, p.name, p.merchant, tuple(p.category_path), p.color, p.price,
            price_tier(p.price, thresholds), p.in_stock, p.created_at.replace(tzinfo=UTC) if p.created_at else None,
        )


class _Built(msgspec.Struct, gc=False):
    """A cache entry: the product object an out was built from (frozen dataclasses of atomic fields: no cycle)."""

    product: Product
    out: ProductOut
    raw: msgspec.Raw | None = None  # `out` encoded, made at its first use in a feed (an untracked object too)


class ProductOuts:
    """`ProductOut.of` once per product version, the shop's id looked up then: feeds show the same products over
    and over, and a product object is replaced (never mutated) when it changes, so an entry is valid while it
    holds that object (a key keeps its shop id for life). Entries are untracked by the cyclic collector (a tuple
    would be one more object per product for its every full pass to walk)."""

    def __init__(self, thresholds: tuple[float, ...], ids: IdMap, limit: int = 200_000) -> None:
        self.thresholds = thresholds
        self.ids = ids
        self.limit = limit
        self._outs: dict[int, _Built] = {}

    def __call__(self, product: Product) -> ProductOut:
        return self._built(product).out

    def encoded(self, product: Product) -> msgspec.Raw:
        """The product's `ProductOut` as JSON, encoded once per product version (a feed item embeds it as is)."""
        built = self._built(product)
        raw = built.raw
        if raw is None:
            raw = built.raw = msgspec.Raw(msgspec.json.encode(built.out))
        return raw

    def _built(self, product: Product) -> _Built:
        hit = self._outs.get(product.product_id)
        if hit is not None and hit.product is product:
            return hit
        if len(self._outs) >= self.limit:
            self._outs.clear()
        built = self._outs[product.product_id] = _Built(
            product, ProductOut.of(product, self.thresholds, ext(self.ids, product.product_id)))
        return built


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


# The sender's own id of one event (e.g. a UUID made when the shopper acted), so a retried POST stores it once.
EventKey = Annotated[str, msgspec.Meta(
    min_length=1, max_length=128, pattern=_KEY,
    description="your id of this event, 1-128 printable ASCII characters without spaces (e.g. a UUID): an event "
                "whose event_id was stored in the last events.dedupe_window_hours (default 24) is not stored again",
)]


class EventIn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The SQS message body, plus an optional timestamp (default: when it is received). Untracked by the cyclic
    collector (strings and numbers), like the `Event` made of it: a request's rows are in flight until the group
    commit holding them is durable."""

    customer_id: WireId
    product_id: WireId
    event_name: EventName
    timestamp: Moment | None = None
    recommendation_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None  # from the feed
    position: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None  # the item's position in that feed
    event_id: EventKey | None = None  # the sender's id of this event: a retry with the same id stores nothing

    def ts(self, now: datetime, max_future_seconds: float) -> datetime:
        """When it happened (naive UTC): an ISO 8601 string from 1970 to max_future_seconds ahead of now."""
        if not self.timestamp:
            return now
        return moment(self.timestamp, "timestamp", now + timedelta(seconds=max_future_seconds))


class EventsAccepted(msgspec.Struct):
    accepted: int  # events of the request, all on disk
    event_ids: list[int]  # the appliance's id of each, in order (a repeated event_id: the stored event's)
    duplicates: int = 0  # events not stored again: their event_id was stored already


class FeedItem(msgspec.Struct, omit_defaults=True):
    """One feed item. `score` is in 0..1 for every source (personal: similarity (cosine + 1) / 2; popular:
    popularity relative to the most popular product; new: freshness 1 - age / feed.new_arrival_days; moved by
    boost and bury rules), so items of several sources compare and `min_score` means one thing."""

    product: ProductOut
    score: float  # 0..1 for every source, as in the widgets (see README "Scores")
    source: str  # which source brought it: personal / popular / new / price / pinned
    position: int | None = None  # 1-based over the whole feed (page 2 of 20 starts at 21): send it with events
    reason: str = ""  # a line a storefront can show: "because you viewed X", "popular in Shoes", "new arrival"
    explain: dict[str, float] | None = None  # explain=true: the score's parts (similarity, popularity, rules)


class FeedOut(msgspec.Struct):
    customer_id: str
    ordering: str  # personal / popular / price_asc / price_desc
    personalized: bool
    feed_id: str  # send it with the next pages: they continue this order with no duplicates or gaps
    recommendation_id: str  # this answer; send it with the events it leads to (clicks, carts, purchases)
    page: int
    per_page: int
    total: int
    pages: int
    items: list[FeedItem]

    @classmethod
    def of(cls, customer_id: str, page: FeedPage, product_out: ProductOuts, recommendation_id: str,
           explain: bool = False) -> FeedOut:
        products, first = page.products, first_position(page)
        # the items encoded once per page: a cached page (jobs/feed_pages.py) answered again reuses the bytes; each
        # product's own JSON is encoded once per product version (`ProductOuts.encoded`) and embedded as it is
        memo = "items+parts" if explain else "items"
        items = page.memo.get(memo)
        if items is None:
            encoded = product_out.encoded
            items = page.memo[memo] = msgspec.Raw(msgspec.json.encode([
                FeedItem(encoded(products[p.product_id]), p.score, p.source, first + i, p.reason,  # type: ignore[arg-type]
                         p.parts if explain else None)
                for i, p in enumerate(page.items)
            ]))
        return cls(
            customer_id, page.ordering, page.personalized, page.feed_id, recommendation_id, page.page, page.per_page,
            page.total, page.pages, items,  # type: ignore[arg-type]  # msgspec writes Raw as it is
        )


def first_position(page: FeedPage) -> int:
    return (page.page - 1) * page.per_page + 1


class AnalyticsRow(msgspec.Struct):
    widget: str  # feed
    source: str  # why the items were there: personal / popular / new / price
    model_version: str  # the tower serving when they were shown ("mean": the fallback)
    day: date  # UTC day they were shown
    impressions: int  # items shown
    clicks: int  # of them, clicked (attributed; see README "Attribution")
    carts: int
    purchases: int
    click_through_rate: float  # clicks / impressions
    conversion_rate: float  # purchases / impressions


class AnalyticsOut(msgspec.Struct):
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    attribution_window_hours: float
    totals: dict[str, float]  # impressions, clicks, carts, purchases and the two rates over all rows
    rows: list[AnalyticsRow]


class Erased(msgspec.Struct):
    customer_id: str
    events: int  # events deleted
    queued_messages: int  # queue messages deleted (live and dead-lettered)
    vectors: int  # user vectors deleted (0 or 1)
    impressions: int = 0  # recommended items recorded as shown to them


class MergeIn(msgspec.Struct, forbid_unknown_fields=True):
    """The anonymous id (e.g. a cookie's) whose history now belongs to the customer in the path."""

    anonymous_id: WireId


class QueueOut(msgspec.Struct):
    depth: int  # visible now
    in_flight: int
    dead_lettered: int
    oldest_age_seconds: float
    processed: int  # messages this process's consumer has processed since start
    dead_letters_dropped: int  # ever dropped by realtime.dead_letter_max / dead_letter_retention_days, oldest first
    backend: str = "in-process"  # queue.backend
    outbox_backlog: int = 0  # sqs: messages committed in DuckDB, not yet in SQS
    sqs: dict[str, str] | None = None  # sqs: the queue's attributes (counts, timeouts, redrive policy)
    sqs_unreachable: str | None = None  # sqs: why SQS did not answer just now (its counts then read 0)


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


class Health(msgspec.Struct):
    status: str  # live / ready / starting / failed (start-up) / unavailable (the disk refuses writes)
    products: int | None = None
    events: int | None = None
    pending_embeddings: int | None = None
    indexed: int | None = None
    detail: str | None = None
