"""The one place in web/ where the shop's ids become the keys used inside, and back.

Bodies, query strings, paths and import files carry the shop's ids (see appliance/ids.py for the rules);
controllers and the CLI turn them into keys here, and answers turn keys back into the shop's ids here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar.params import Parameter

from appliance.errors import NotFound
from appliance.ids import MAX_LENGTH, PATTERN, shop_id
from appliance.types import NO_IDS, Event
from storage.ids import IdMap, ShopIds

_RULE = f"the shop's own id: 1-{MAX_LENGTH} characters, no whitespace, control characters or '/'"

# An id in a JSON body or an import file: a string, or an integer meaning its decimal string.
WireId = Annotated[
    Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LENGTH, pattern=PATTERN)] | int,
    msgspec.Meta(description=f"{_RULE}; an integer means its decimal string"),
]
# An id in a URL path.
ProductPath = Annotated[
    str, Parameter(min_length=1, max_length=MAX_LENGTH, pattern=PATTERN, description=f"product id, {_RULE}")
]
CustomerPath = Annotated[
    str, Parameter(min_length=1, max_length=MAX_LENGTH, pattern=PATTERN, description=f"customer id, {_RULE}")
]


def normalised(values: Iterable[str | int], field: str) -> list[str]:
    """The shop's ids as strings (12345 -> "12345"); InvalidInput naming `field` for a bad one."""
    return [shop_id(v, field) for v in values]


def created(ids: IdMap, values: Sequence[str | int], field: str) -> list[int]:
    """The keys of these ids, new ones created (writing a product or an event)."""
    return ids.keys(normalised(values, field), create=True)  # type: ignore[return-value]


def new_ids(ids: ShopIds, rows: Sequence[Any]) -> bool:
    """Whether keying these events would create a key (a DuckDB write); InvalidInput for a bad id."""
    return not (ids.customers.knows(normalised((r.customer_id for r in rows), "customer_id"))
                and ids.products.knows(normalised((r.product_id for r in rows), "product_id")))


def keyed_events(
    ids: ShopIds, rows: Sequence[Any], stamps: Sequence[datetime]
) -> tuple[list[Event], list[str], list[str]]:
    """Events (wire rows with their timestamps) under their keys, new ids created; and each row's customer and
    product id as the shop writes them (for the queue bodies)."""
    customers = normalised((r.customer_id for r in rows), "customer_id")
    products = normalised((r.product_id for r in rows), "product_id")
    events = [
        Event(c, p, r.event_name, ts, r.recommendation_id, r.position, r.event_id) for r, c, p, ts in zip(
            rows, ids.customers.keys(customers, create=True), ids.products.keys(products, create=True), stamps,
            strict=True)
    ]
    return events, customers, products


def known(ids: IdMap, value: str, what: str) -> int:
    """The key of an id that must exist (reading or deleting a product): NotFound otherwise."""
    key = ids.key(shop_id(value, f"{what}_id"))
    if key is None:
        raise NotFound(f"{what} {value} does not exist")
    return key


def existing(ids: IdMap, values: Iterable[str], field: str) -> frozenset[int]:
    """The keys of those ids that are known (e.g. `exclude=`: an unknown product is in no feed anyway)."""
    return frozenset(k for k in ids.keys(normalised(values, field)) if k is not None) or NO_IDS


def ext(ids: IdMap, key: int) -> str:
    """The shop's id of a key about to be shown."""
    value = ids.ext(key)
    if value is None:
        raise LookupError(f"no shop id is mapped to key {key}")  # a store written around the map: a bug
    return value


def exts(ids: IdMap, keys: Iterable[int]) -> list[str]:
    """The shop's ids of keys, leaving out forgotten ones (an erased or merged shopper)."""
    return [e for e in ids.exts(keys) if e is not None]
