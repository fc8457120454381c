"""Domain types shared by every layer: products, events, scored results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

# Interaction types, in the order their learned embeddings are indexed by the user tower.
EVENT_NAMES: tuple[str, ...] = (
    "product_viewed",
    "product_clicked",
    "product_added_to_cart",
    "product_favorited",
    "product_shared",
    "product_purchased",
)
EVENT_INDEX: dict[str, int] = {name: i for i, name in enumerate(EVENT_NAMES)}
# One empty id set for every shopper without purchases and every query without exclusions: each `frozenset()`
# is a new object that the cyclic collector tracks, and feed snapshots and cached pages keep theirs.
NO_IDS: frozenset[int] = frozenset()


def utc_naive(moment: datetime) -> datetime:
    """Normalise a datetime to naive UTC, the form stored in DuckDB TIMESTAMP columns."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Product:
    product_id: int
    name: str
    merchant: str | None = None
    category_path: tuple[str, ...] = ()  # parent -> category -> subcategory
    color: str | None = None
    price: float | None = None
    in_stock: bool = True
    created_at: datetime | None = None  # naive UTC


class Event(msgspec.Struct, frozen=True, gc=False):
    """One interaction. A struct the cyclic collector does not track (numbers, strings and a datetime: never in a
    cycle), and whose creation does not count towards a young collection: the write path holds thousands in
    flight (a consumer batch's histories, up to 20 per shopper, the group commit's waiting requests), and as
    tracked objects they were what its middle-generation passes walked (BENCHMARKS.md, "Feed under load", ninth
    round). Copied with `msgspec.structs.replace`."""

    customer_id: int
    product_id: int
    event_name: str  # one of EVENT_NAMES
    ts: datetime  # naive UTC
    recommendation_id: str | None = None  # the feed answer the shopper acted on, when the shop sends it back
    position: int | None = None  # the item's 1-based position in that feed
    key: str | None = None  # the sender's id of this event (POST /events' event_id): stored once per key


@dataclass(frozen=True, slots=True)
class Scored:
    product_id: int
    score: float
    source: str  # why it is there: personal / popular / new / price / similar


class Pick(msgspec.Struct, gc=False):
    """One recommended product. `score` is in 0..1 for every source, so items of several sources in one
    answer compare: similarity (cosine + 1) / 2, co-occurrence (Ochiai), trend z / (z + 3), popularity
    relative to the most popular product, recency of a view 2^(-age / 1 day).

    Treated as immutable (changed copies are made with `msgspec.structs.replace`). A struct the cyclic
    collector does not track (`gc=False`: it holds numbers, strings and a dict of numbers, so it is never part
    of a cycle): the page cache keeps 20 per personal page, and as tracked objects they were 20 of the 36 that
    each personal request left for the collector's passes to walk (BENCHMARKS.md, "Feed under load"). Built
    in half the time of a slots dataclass (0.09 µs against 0.18; a frozen dataclass took 1.9)."""

    product_id: int
    score: float
    source: str  # bought_together / related / similar / trending / popular / recently_viewed
    reason: str  # what a storefront can show: "bought with X", "trending in Shoes"
    parts: dict[str, float] = msgspec.field(default_factory=dict)  # the score's parts (explain=true)
