"""The widgets' use cases: building their tables from the events (the `widgets` job) and answering one
widget request (a single endpoint or one entry of POST /recommendations) from memory where it can
(jobs/widget_memory.py: what is shared by a call, what is cached between calls)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from appliance import widgets as sources
from appliance.catalog_view import CatalogView
from appliance.config_sections import WidgetsConfig
from appliance.cooccurrence import Neighbours, trending, trending_categories
from appliance.errors import InvalidInput
from appliance.finish import Finish, finish
from appliance.pipeline import Selection
from appliance.recommender import Recommender
from appliance.types import Pick
from appliance.widgets import Widgets, WidgetTables
from jobs.neighbour_lists import NeighbourLists
from jobs.recent import BROWSE, RecentViews, epoch
from jobs.widget_memory import Call, Kept, Memo, Moment
from storage.baskets import BasketStore
from storage.events import EventStore
from storage.rules import RuleStore
from storage.vectors import VectorIndex

BASKET = ("product_added_to_cart", "product_purchased")
INLINE_RANK = 20_000  # a category this large or smaller is ranked by popularity on the event loop (no thread hop)
FINISH_HEAD = 4  # appliance/finish.py diversifies the first 4 × k allowed picks: more cannot change an answer
MODELS = ("bought-together", "related", "looking-similar", "trending", "recently-viewed")


def build_tables(baskets: BasketStore, config: WidgetsConfig, now: datetime, view: CatalogView) -> WidgetTables:
    """Co-occurrence of carted/bought products and of viewed products per session, the trend of products and
    of categories, and the trend as ready picks (overall and per category)."""
    since, gap = now - timedelta(days=config.window_days), config.session_gap_minutes * 60.0

    def neighbours(names: tuple[str, ...]) -> Neighbours:
        pairs, support, _ = baskets.co_occurrence(names, since, gap, config.max_basket)
        return Neighbours.build(pairs, support, config.min_support, config.depth)

    recent_from = now - timedelta(hours=config.trending_recent_hours)
    base_from = recent_from - timedelta(days=config.trending_baseline_days)
    until = now + timedelta(seconds=1)
    hours = (config.trending_recent_hours, config.trending_baseline_days * 24.0, config.trending_min_shoppers)
    trend = trending(baskets.shoppers_per_product(recent_from, until),
                     baskets.shoppers_per_product(base_from, recent_from), *hours)
    categories = trending_categories(baskets.category_shoppers(recent_from, until),
                                     baskets.category_shoppers(base_from, recent_from), *hours)
    picks, by_name = sources.trend_picks(trend, view)
    return WidgetTables(neighbours(BASKET), neighbours(BROWSE), trend, now, categories, picks, by_name)


def most_popular(recommender: Recommender) -> np.ndarray:
    """Every product, most popular first (whose neighbour lists are computed first)."""
    view = recommender.view()
    return view.ids[recommender.popularity_of(view)[0]]


def refresh(widgets: Widgets) -> str:
    """The scheduled job: rebuild the tables now."""
    tables = widgets.refresh()
    return (f"bought together for {len(tables.bought)} products, co-viewed for {len(tables.viewed)}, "
            f"{len(tables.trend.product_ids)} trending products, {len(tables.categories.paths)} categories")


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
    recent: RecentViews
    memo: Memo
    lists: NeighbourLists  # each product's nearest products, computed ahead

    def call(self, blocking: bool) -> Call:
        """The shared reads of one HTTP call (see jobs/widget_memory.py)."""
        return Call(self.recommender, self.widgets, self.rules, self.events, self.index, self.clock, blocking)


@dataclass(frozen=True)
class Ask:
    """One widget request, in keys: which model, about which products and/or shopper, with which filters."""

    model: str  # one of MODELS
    product_ids: tuple[int, ...]  # the product of a product page, or a whole cart
    customer_id: int | None  # who asks: their purchases are left out; recently-viewed needs it
    how: Finish


def recommend(parts: WidgetParts, ask: Ask, call: Call) -> list[Pick]:
    """The picks of one widget, through the shared pipeline. The candidates are kept per (request, inputs) for
    every shopper, and so is the finished answer: a shopper's purchases change it only when one of them is among
    the products it read (its candidates and the pins), so a shopper who bought none of those gets the kept
    answer, and an answer computed for them is the one every such shopper gets (jobs/widget_memory.py: both hold
    across catalog edits that do not touch what they read)."""
    m = call.moment()
    if ask.model == "recently-viewed":
        return _recently_viewed(parts, ask, call, m)
    if ask.model != "trending" and not ask.product_ids:
        raise InvalidInput(f"{ask.model} needs product_id (or product_ids)", field="product_id")
    purchased = call.purchased(ask.customer_id) | ask.how.purchased
    how = replace(ask.how, purchased=purchased, rules=m.rules, now=m.now)
    key = (replace(ask, customer_id=None), m.stamp)
    hit = Memo.fresh(parts.memo.answers, key, m)
    if hit is not None and _unread(purchased, hit.products):
        return hit.value
    if ask.model == "looking-similar":  # what it says: the nearest in order, not diversified
        how = replace(how, max_in_row=0)
    source = Memo.fresh(parts.memo.sources, key, m)
    if source is None:
        source = _source(parts, ask, call, m)
        parts.memo.sources.put(key, source)
    picks = finish(m.view, head_of(m, source.value, how), how)
    pins = frozenset(r.product_id for r in m.rules if r.product_id is not None and r.active(m.now))
    depends = None if source.products is None else source.products | pins
    if _unread(purchased, depends):  # the answer of a shopper without purchases too
        parts.memo.answers.put(key, Kept(picks, m.version, depends, source.categories, source.popularity))
    return picks


def _unread(purchased: frozenset[int], read: frozenset[int] | None) -> bool:
    """Whether leaving these purchases out changes nothing of an answer that read these products (None: every
    product): the pipeline looks at a purchase only where it meets a candidate or a pin."""
    return not purchased or (read is not None and purchased.isdisjoint(read))


def head_of(m: Moment, picks: list[Pick], how: Finish) -> list[Pick]:
    """The part of a long candidate list (trending: up to 2000) that the pipeline can use, so a request does not
    walk all of it: the candidates the filters allow, de-duplicated, the first `FINISH_HEAD` × k plus the pins.
    Exact while no hide, boost or bury rule is active (those re-rank or remove; the whole list goes then): the
    pipeline keeps the allowed candidates in order and arranges only the first 4 × k."""
    active = [r for r in how.rules if r.active(m.now)]
    need = FINISH_HEAD * how.k + sum(r.kind == "pin" for r in active)
    if len(picks) <= need or any(r.kind != "pin" for r in active):
        return picks
    view = m.view
    rows = np.fromiter((view.row.get(p.product_id, -1) for p in picks), np.int64, len(picks))
    ok = rows >= 0
    ok[ok] = Selection.of(view, how.query, how.purchased).allows(rows[ok])
    head, seen = [], set()
    for pick, allowed in zip(picks, ok.tolist(), strict=True):
        if allowed and pick.product_id not in seen:
            seen.add(pick.product_id)
            head.append(pick)
            if len(head) == need:
                break
    return head


def _source(parts: WidgetParts, ask: Ask, call: Call, m: Moment) -> Kept:
    """The model's candidates, best first, before the pipeline, with what of the catalog they read: their own
    products and the asked ones (names in reasons, the fallback's categories), the filtered neighbours' all."""
    asked = frozenset(ask.product_ids)
    if ask.model == "trending":
        picks = sources.trending(m.tables, ask.how.query.categories)
        return _kept(m, picks, asked)
    if ask.model == "bought-together":
        picks = sources.bought_together(m.tables, m.view, ask.product_ids)
        return _kept(m, picks, asked) if picks else _complements(parts, ask, call, m, asked)
    anchor = ask.product_ids[0]
    ids, cosines, read = _nearest(parts, ask, call, m, anchor)
    if ask.model == "looking-similar":
        picks = sources.looking_similar(m.view, anchor, ids, cosines)
    else:
        picks = sources.related(m.tables, m.view, anchor, ids, cosines, parts.config.related_behaviour_weight)
    return _kept(m, picks, None if read is None else asked | read)


def _kept(m: Moment, picks: list[Pick], read: frozenset[int] | None, categories: frozenset[str] = frozenset(),
          popularity: np.ndarray | None = None) -> Kept:
    products = None if read is None else read | {p.product_id for p in picks}
    return Kept(picks, m.version, products, categories, popularity)


def _complements(parts: WidgetParts, ask: Ask, call: Call, m: Moment, asked: frozenset[int]) -> Kept:
    """Bought-together's fallback: each top category's products by popularity are ranked once per popularity
    (and kept while no product joins or leaves the category)."""
    where = sources.complement_of(m.view, ask.product_ids)
    top = None if where is None else where[0].strip().lower()
    key = (top, m.stamp)
    hit = Memo.fresh(parts.memo.complements, key, m)
    if hit is None:  # a top category's posting list sorted on the loop (15k rows: 1.2 ms), the whole shop not
        call.need(top is not None and len(m.view.by_category.get(top, ())) <= INLINE_RANK)
        ranked = sources.ranked(m.view, m.popularity, top), sources.peak(m.popularity)
        hit = Kept(ranked, m.version, frozenset(),
                   frozenset(() if top is None else (top,)), m.popularity)
        parts.memo.complements.put(key, hit)
    rows, peak = hit.value
    picks = sources.complements(m.view, m.popularity, where, rows, max(parts.config.depth, ask.how.k * 5), peak)
    leaves = frozenset(() if where is None else (leaf.strip().lower() for leaf in where[1]))
    return _kept(m, picks, asked, hit.categories | leaves, m.popularity)


def _recently_viewed(parts: WidgetParts, ask: Ask, call: Call, m: Moment) -> list[Pick]:
    if ask.customer_id is None:
        return []  # a shopper never seen has viewed nothing
    want = max(ask.how.k * 3, parts.config.k)
    viewed = parts.recent.in_memory(ask.customer_id, want)
    if viewed is None:
        call.need(False)
        viewed = parts.recent.get(ask.customer_id, want)
    # the shopper's own order; products they bought stay
    how = replace(ask.how, rules=m.rules, now=m.now, max_in_row=0)
    return finish(m.view, sources.recently_viewed(viewed, epoch(m.now)), how)


def _nearest(parts: WidgetParts, ask: Ask, call: Call, m: Moment, anchor: int
             ) -> tuple[np.ndarray, np.ndarray, frozenset[int] | None]:
    """The anchor's nearest products by vector that the request's filters allow, best first, and the products
    whose attributes chose them (None: the whole catalog's). The unfiltered neighbours are kept per product
    (until the vector index changes); a filter that leaves fewer than half of them searches the index with the
    filter inside, so a narrow filter still fills the list."""
    depth = max(parts.config.depth, ask.how.k * 5)
    ids, cosines = _neighbours(parts, call, anchor, depth)
    query = ask.how.query
    rows = np.array([m.view.row.get(int(p), -1) for p in ids.tolist()], np.int64)
    keep = rows >= 0
    keep[keep] = Selection.of(m.view, query).allows(rows[keep])
    if keep.sum() * 2 >= min(len(ids), depth) or len(ids) < depth:
        return ids[keep], cosines[keep], frozenset(ids.tolist())
    call.need(False)
    every = Selection.of(m.view, query).allows(np.arange(m.view.n, dtype=np.int64))
    row = m.view.row
    found = _search(parts, anchor, depth, lambda label: label != anchor and label in row and bool(every[row[label]]))
    return *found, None


def _neighbours(parts: WidgetParts, call: Call, anchor: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    ahead = parts.lists.get(anchor, depth)
    if ahead is not None:
        return ahead
    version = parts.index.version
    hit = parts.memo.nearest.get(anchor)
    if hit is not None and hit[0] == version and len(hit[1]) >= depth:
        return hit[1][:depth], hit[2][:depth]
    call.need(False)
    ids, cosines = _search(parts, anchor, depth + 1, None)
    mine = ids != anchor
    ids, cosines = ids[mine][:depth], cosines[mine][:depth]
    if len(ids):  # none while the anchor's own vector is still being computed: asked again next time
        parts.memo.nearest.put(anchor, (version, ids, cosines))
    return ids, cosines


def _search(parts: WidgetParts, anchor: int, depth: int, accept: Callable[[int], bool] | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The nearest products by vector; none while the anchor's own vector is still being computed (related
    products then come from co-views alone, looking-similar is empty until it is ready)."""
    try:
        vector = parts.index.get(np.array([anchor]))[0]
    except KeyError:
        return np.zeros(0, np.int64), np.zeros(0)
    labels, sims = parts.index.query(vector, depth, accept=accept)
    return np.asarray(labels, np.int64), np.asarray(sims, np.float64)


def categories(parts: WidgetParts, call: Call, k: int, within: str | None) -> list[sources.CategoryPick]:
    """The categories whose distinct shoppers rise against their own baseline, best first; `within`: only
    those under this category (any level of the path)."""
    m = call.moment()
    return sources.rising_categories(m.tables.categories, [r for r in m.rules if r.active(m.now)], within, k)
