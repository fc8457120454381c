"""One widget request answered: the shop's ids become keys, the use case runs, picks become wire items.
The feed, asked inside POST /recommendations, is brought onto the widgets' 0..1 score scale here."""

from __future__ import annotations

from appliance.errors import InvalidInput
from appliance.finish import Finish
from appliance.ids import shop_id
from appliance.pipeline import FeedQuery
from appliance.types import Pick
from jobs.widgets import Ask, merchandise, recommend
from web.ids import existing, ext, known
from web.schemas import ProductOut
from web.services import Services
from web.widget_schemas import Model, WidgetItem, WidgetRequest, item

_FEED_REASONS = {"personal": "picked for you", "popular": "popular", "new": "new arrival", "price": "by price"}


def answer(services: Services, request: WidgetRequest) -> list[WidgetItem]:
    if request.model is None:
        raise InvalidInput(f"model is required: one of {', '.join(Model.__args__)}", field="model")
    config = services.config.widgets
    k = min(request.k or config.k, config.max_k)
    query = FeedQuery(
        1, k, None, tuple(request.category or ()), request.min_price, request.max_price, request.in_stock,
        existing(services.ids.products, [str(x) for x in request.exclude or []], "exclude"), request.min_score,
    )
    products = [request.product_id] if request.product_id is not None else list(request.product_ids or [])
    keys = tuple(known(services.ids.products, str(p), "product") for p in products)
    who = None if request.customer_id is None else shop_id(request.customer_id, "customer_id")
    customer = None if who is None else services.ids.customers.key(who)
    how = Finish(query, k, frozenset(), config.max_in_row, config.diversity_by)
    if request.model == "feed":
        picks = merchandise(services.widgets, _feed(services, query, customer), how)
    else:
        picks = recommend(services.widgets, Ask(request.model, keys, customer, how))
    view = services.recommender.view()
    thresholds = services.config.catalog.tier_thresholds
    return [item(ProductOut.of(view.products[p.product_id], thresholds, ext(services.ids.products, p.product_id)),
                 p, request.explain) for p in picks]


def _feed(services: Services, query: FeedQuery, customer: int | None) -> list[Pick]:
    """Page 1 of the shopper's feed, each score on the 0..1 scale: personal (cosine + 1) / 2, popular and new
    arrivals their popularity relative to the most popular product."""
    page = services.feeds.page(customer, query)
    view = services.recommender.view()
    _, popularity = services.recommender.popularity_of(view)
    top = float(popularity.max()) if len(popularity) and popularity.max() > 0 else 1.0
    picks = []
    for s in page.items:
        if s.source == "personal":
            score, part = s.score / 2.0, "similarity"
        else:
            score, part = float(popularity[view.row[s.product_id]]) / top, "popularity"
        picks.append(Pick(s.product_id, score, s.source, _FEED_REASONS.get(s.source, s.source), {part: score}))
    return picks
