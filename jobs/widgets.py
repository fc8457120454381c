"""The widgets' use cases: building their tables from the events (the `widgets` job) and answering one
widget request (a single endpoint or one entry of POST /recommendations)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from appliance import widgets as sources
from appliance.config import WidgetsConfig
from appliance.cooccurrence import Neighbours, trending
from appliance.errors import InvalidInput
from appliance.finish import Finish, finish
from appliance.pipeline import Selection
from appliance.recommender import Recommender
from appliance.types import Pick
from appliance.widgets import Widgets, WidgetTables
from storage.baskets import BasketStore
from storage.events import EventStore
from storage.rules import RuleStore
from storage.vectors import VectorIndex

BASKET = ("product_added_to_cart", "product_purchased")
BROWSE = ("product_viewed", "product_clicked")
MODELS = ("bought-together", "related", "looking-similar", "trending", "recently-viewed")


def build_tables(baskets: BasketStore, config: WidgetsConfig, now: datetime) -> WidgetTables:
    """Co-occurrence of carted/bought products and of viewed products per session, and the trend."""
    since, gap = now - timedelta(days=config.window_days), config.session_gap_minutes * 60.0

    def neighbours(names: tuple[str, ...]) -> Neighbours:
        pairs, support, _ = baskets.co_occurrence(names, since, gap, config.max_basket)
        return Neighbours.build(pairs, support, config.min_support, config.depth)

    recent_from = now - timedelta(hours=config.trending_recent_hours)
    base_from = recent_from - timedelta(days=config.trending_baseline_days)
    trend = trending(
        baskets.shoppers_per_product(recent_from, now + timedelta(seconds=1)),
        baskets.shoppers_per_product(base_from, recent_from),
        config.trending_recent_hours, config.trending_baseline_days * 24.0, config.trending_min_shoppers,
    )
    return WidgetTables(neighbours(BASKET), neighbours(BROWSE), trend, now)


def refresh(widgets: Widgets) -> str:
    """The scheduled job: rebuild the tables now."""
    tables = widgets.refresh()
    return (f"bought together for {len(tables.bought)} products, co-viewed for {len(tables.viewed)}, "
            f"{len(tables.trend.product_ids)} trending")


@dataclass(frozen=True)
class WidgetParts:
    recommender: Recommender
    widgets: Widgets
    index: VectorIndex
    baskets: BasketStore
    events: EventStore
    rules: RuleStore
    config: WidgetsConfig
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class Ask:
    """One widget request, in keys: which model, about which products and/or shopper, with which filters."""

    model: str  # one of MODELS
    product_ids: tuple[int, ...]  # the product of a product page, or a whole cart
    customer_id: int | None  # who asks: their purchases are left out; recently-viewed needs it
    how: Finish


def recommend(parts: WidgetParts, ask: Ask) -> list[Pick]:
    """The picks of one widget, through the shared pipeline."""
    view = parts.recommender.view()
    purchased = frozenset(parts.events.purchased(ask.customer_id)) if ask.customer_id is not None else frozenset()
    how = replace(ask.how, purchased=purchased | ask.how.purchased, rules=parts.rules.all(), now=parts.clock())
    if ask.model == "trending":
        picks = sources.trending(parts.widgets.tables(), view)
    elif ask.model == "recently-viewed":
        if ask.customer_id is None:
            return []  # a shopper never seen has viewed nothing
        viewed = parts.baskets.recently_viewed(ask.customer_id, BROWSE, max(ask.how.k * 3, parts.config.k))
        picks = sources.recently_viewed(viewed, parts.clock())
        how = replace(how, purchased=ask.how.purchased, max_in_row=0)  # the shopper's own order; bought ones stay
    elif not ask.product_ids:
        raise InvalidInput(f"{ask.model} needs product_id (or product_ids)", field="product_id")
    elif ask.model == "bought-together":
        _, popularity = parts.recommender.popularity_of(view)
        picks = sources.bought_together(parts.widgets.tables(), view, ask.product_ids, popularity,
                                        max(parts.config.depth, ask.how.k * 5))
    else:
        anchor = ask.product_ids[0]
        # the filters inside the index search, as one mask over the view's rows: a narrow filter still fills k
        keep = Selection.of(view, ask.how.query).allows(np.arange(view.n, dtype=np.int64))
        ids, cosines = _nearest(parts, anchor, max(parts.config.depth, ask.how.k * 5),
                                lambda label: label != anchor and label in view.row and bool(keep[view.row[label]]))
        if ask.model == "looking-similar":  # what it says: the nearest in order, not diversified
            picks = sources.looking_similar(view, anchor, ids, cosines)
            how = replace(how, max_in_row=0)
        else:
            picks = sources.related(parts.widgets.tables(), view, anchor, ids, cosines,
                                    parts.config.related_behaviour_weight)
    return finish(view, picks, how)


def _nearest(parts: WidgetParts, anchor: int, depth: int, accept: Callable[[int], bool]
             ) -> tuple[np.ndarray, np.ndarray]:
    """The nearest products by vector; none while the anchor's own vector is still being computed (related
    products then come from co-views alone, looking-similar is empty until it is ready)."""
    try:
        vector = parts.index.get(np.array([anchor]))[0]
    except KeyError:
        return np.zeros(0, np.int64), np.zeros(0)
    labels, sims = parts.index.query(vector, depth, accept=accept)
    return np.asarray(labels, np.int64), np.asarray(sims, np.float64)
