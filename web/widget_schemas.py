"""Wire types of the widgets and of the one call for a page (POST /recommendations)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from appliance.types import Pick
from web.ids import WireId
from web.schemas import ProductOut, Text

Model = Literal["feed", "bought-together", "related", "looking-similar", "trending", "recently-viewed"]


class WidgetRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One widget: the model, what it is about, and the feed's filters (Algolia's `requests[]` entry)."""

    model: Model | None = None  # required in POST /recommendations (the route says it elsewhere)
    product_id: WireId | None = None  # the product of a product page
    product_ids: Annotated[list[WireId], msgspec.Meta(max_length=100)] | None = None  # a cart (bought-together)
    customer_id: WireId | None = None  # who asks: purchases left out; required by recently-viewed and feed
    k: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None  # how many (default widgets.k, at most widgets.max_k)
    category: Annotated[list[Text], msgspec.Meta(max_length=20)] | None = None  # any level of the path
    min_price: Annotated[float, msgspec.Meta(ge=0)] | None = None
    max_price: Annotated[float, msgspec.Meta(ge=0)] | None = None
    in_stock: bool | None = None
    exclude: Annotated[list[WireId], msgspec.Meta(max_length=1000)] | None = None
    min_score: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None  # on the 0..1 score scale
    explain: bool = False  # each item's score parts


class WidgetItem(msgspec.Struct, omit_defaults=True):
    product: ProductOut
    score: float  # 0..1 for every widget (see README "Scores")
    source: str
    reason: str
    explain: dict[str, float] | None = None


class WidgetOut(msgspec.Struct, omit_defaults=True):
    model: str
    items: list[WidgetItem]
    product_id: str | None = None  # the product asked about (product pages)


class CategoryItem(msgspec.Struct, omit_defaults=True):
    category: str  # the category's own name (the last of its path)
    path: list[str]  # top level first: pass any of it as `category=` to the product widgets and the feed
    score: float  # 0..1, the trend on the same scale as trending products
    reason: str
    explain: dict[str, float] | None = None  # trend_z, shoppers (recent window), expected (from its baseline)


class CategoriesOut(msgspec.Struct, omit_defaults=True):
    model: str
    items: list[CategoryItem]
    category: str | None = None  # the parent asked about


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    requests: Annotated[list[WidgetRequest], msgspec.Meta(min_length=1, max_length=20)]


class BatchResult(msgspec.Struct, omit_defaults=True):
    """One answer of the batch, in the order asked: `items` (or the feed) or the request's own `error`."""

    model: str | None
    status: int
    items: list[WidgetItem] | None = None
    error: dict | None = None  # the problem body a single request would have had


class BatchOut(msgspec.Struct):
    results: list[BatchResult]


def item(product: ProductOut, pick: Pick, explain: bool) -> WidgetItem:
    return WidgetItem(product, round(pick.score, 6), pick.source, pick.reason, pick.parts if explain else None)
