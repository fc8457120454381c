"""One widget request answered: the shop's ids become keys, the use case runs, picks become wire items.
The feed, asked inside POST /recommendations, is page 1 of the shopper's feed (already on the 0..1 scale,
through the same rules, diversity and min_score as GET /customers/{id}/feed)."""

from __future__ import annotations

from appliance.errors import InvalidInput
from appliance.finish import Finish
from appliance.ids import shop_id
from appliance.pipeline import FeedQuery
from jobs.widgets import Ask, recommend
from web.ids import existing, ext, known
from web.schemas import ProductOut
from web.services import Services
from web.widget_schemas import Model, WidgetItem, WidgetRequest, item


def answer(services: Services, request: WidgetRequest) -> list[WidgetItem]:
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
        picks = services.feeds.page(customer, query).items
    else:
        picks = recommend(services.widgets, Ask(request.model, keys, customer, how))
    view = services.recommender.view()
    thresholds = services.config.catalog.tier_thresholds
    return [item(ProductOut.of(view.products[p.product_id], thresholds, ext(services.ids.products, p.product_id)),
                 p, request.explain) for p in picks]

