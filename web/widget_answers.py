"""One widget request answered: the shop's ids become keys, the use case runs, picks become wire items.
The feed, asked inside POST /recommendations, is page 1 of the shopper's feed (already on the 0..1 scale,
through the same rules, diversity and min_score as GET /customers/{id}/feed).

`serve` runs a call on the event loop when everything it needs is in memory (the usual case: tables, caches,
rings and purchases are warm) and in a worker thread otherwise (jobs/widget_memory.py `WouldBlock`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio

from appliance.errors import InvalidInput
from appliance.finish import Finish
from appliance.ids import shop_id
from appliance.pipeline import FeedQuery
from appliance.widgets import CategoryPick
from jobs.widget_memory import Call, WouldBlock
from jobs.widgets import Ask, recommend
from web.ids import existing, known
from web.services import Services
from web.widget_schemas import CategoryItem, Model, WidgetItem, WidgetRequest, item

T = TypeVar("T")


async def serve(services: Services, work: Callable[[Call], T]) -> T:
    """`work` on the event loop from memory, or (when it would block) the same call in a worker thread. `work`
    may be entered twice with the same call: it must keep what it finished (the batch keeps its results)."""
    call = services.widgets.call(blocking=False)
    try:
        return work(call)
    except WouldBlock:
        call.blocking = True
        return await anyio.to_thread.run_sync(work, call)


def answer(services: Services, request: WidgetRequest, call: Call) -> list[WidgetItem]:
    if request.model is None:
        raise InvalidInput(f"model is required: one of {', '.join(Model.__args__)}", field="model")
    config = services.config.widgets
    k = min(request.k or config.k, config.max_k)
    query = FeedQuery(
        1, k, None, tuple(request.category or ()), request.min_price, request.max_price, request.in_stock,
        existing(services.ids.products, [str(x) for x in request.exclude or []], "exclude"), request.min_score,
        explain=request.explain,
    )
    products = [request.product_id] if request.product_id is not None else list(request.product_ids or [])
    keys = tuple(known(services.ids.products, str(p), "product") for p in products)
    who = None if request.customer_id is None else shop_id(request.customer_id, "customer_id")
    customer = None if who is None else services.ids.customers.key(who)
    how = Finish(query, k, frozenset(), config.max_in_row, config.diversity_by)
    if request.model == "feed":
        page = services.feeds.from_memory(customer, query)  # the shopper looked up once
        call.need(page is not None)
        picks = (page or services.feeds.page(customer, query)).items
    else:
        picks = recommend(services.widgets, Ask(request.model, keys, customer, how), call)
    view = call.moment().view
    out = services.product_out
    return [item(out(view.products[p.product_id]), p, request.explain) for p in picks if p.product_id in view.products]


def category_item(c: CategoryPick, explain: bool) -> CategoryItem:
    parts = {"trend_z": round(c.z, 6), "shoppers": c.shoppers, "expected": round(c.expected, 6)}
    reason = f"trending in {c.path[-2]}" if len(c.path) > 1 else "trending"
    return CategoryItem(c.path[-1], list(c.path), round(c.score, 6), reason, parts if explain else None)
