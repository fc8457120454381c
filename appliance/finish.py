"""The steps after the candidate sources, shared by every widget: merchandising rules (hide, boost, bury),
filters, purchased products, min_score, diversity, pins, length. Every score on the way is on one scale,
0..1 (see appliance/types.py `Pick`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.pipeline import FeedQuery, Selection
from appliance.rules import Rule, pin, rescore
from appliance.types import Pick

T = TypeVar("T")


@dataclass(frozen=True)
class Finish:
    """What the pipeline applies after a source: the feed's filters, and who is asking."""

    query: FeedQuery  # categories, price range, stock, exclude, min_score (on the 0..1 scale)
    k: int
    purchased: frozenset[int] = frozenset()  # left out (the shopper bought them)
    max_in_row: int = 0  # diversity: at most this many in a row sharing `diversity_by` (0: off)
    diversity_by: str = "brand"  # brand / subcategory
    rules: Sequence[Rule] = ()  # every rule: those active at `now` apply
    now: datetime | None = None


def finish(view: CatalogView, picks: Sequence[Pick], how: Finish) -> list[Pick]:
    """The picks that pass the rules and filters, best first, de-duplicated, diversified, pinned, at most `k`."""
    rules = [r for r in how.rules if how.now is not None and r.active(how.now)]
    picks = rescore(picks, view.products, rules)
    selection = Selection.of(view, how.query, how.purchased)  # the feed's filters, without a catalog-wide mask

    def allowed(product_ids: Sequence[int]) -> np.ndarray:
        rows = np.asarray([view.row.get(pid, -1) for pid in product_ids], dtype=np.int64)
        ok = rows >= 0
        ok[ok] = selection.allows(rows[ok])
        return ok

    seen: set[int] = set()
    out = []
    for pick, ok in zip(picks, allowed([p.product_id for p in picks]), strict=True):
        if not ok or pick.product_id in seen:
            continue
        if how.query.min_score is not None and pick.score < how.query.min_score:
            continue
        seen.add(pick.product_id)
        out.append(pick)
    if how.max_in_row > 0:
        attribute = "merchant" if how.diversity_by == "brand" else "category_path"
        head = out[:how.k * 4]  # enough to fill k; the quadratic reordering never sees a long tail
        out = diversify(head, lambda p: getattr(view.products[p.product_id], attribute) or None, how.max_in_row)
    pinned = [r for r in rules if r.kind == "pin" and r.product_id is not None]
    pins = [r for r, ok in zip(pinned, allowed([r.product_id for r in pinned]), strict=True) if ok
            and not any(h.kind == "hide" and h.matches(view.products[r.product_id]) for h in rules)]
    return pin(out, pins)[:how.k]


def diversify(items: Sequence[T], key: Callable[[T], object], max_in_row: int, limit: int | None = None,
              complete: bool = True) -> list[T]:
    """The first `limit` of these items with no more than `max_in_row` consecutive ones sharing `key` (a brand,
    a subcategory), keeping the order otherwise: an item that would extend a run waits for the first place it
    may go; when nothing else is left, the rest follow in order. `complete=False` says more items follow the
    ones given: it then stops where only run-extending items are left, so what it returns is a prefix of the
    answer over any longer list (the feed's pages stay stable)."""
    keys = [key(p) for p in items]
    limit = len(items) if limit is None else min(limit, len(items))
    if not _runs_over(keys[:limit], max_in_row):
        return list(items[:limit])  # already diverse: the greedy pass would take each in turn
    waiting = list(range(len(items)))
    out: list[int] = []
    run_key, run = None, 0
    while waiting and len(out) < limit:
        i = next((j for j, w in enumerate(waiting) if run < max_in_row or keys[w] != run_key), None)
        if i is None:
            if not complete:
                break
            i = 0
        w = waiting.pop(i)
        out.append(w)
        if keys[w] is None:  # no brand (or no subcategory): part of no run
            run, run_key = 0, None
        else:
            run, run_key = (run + 1, run_key) if out[1:] and keys[w] == run_key else (1, keys[w])
    return [items[w] for w in out]


def _runs_over(keys: Sequence[object], max_in_row: int) -> bool:
    run = 0
    for i, k in enumerate(keys):
        run = 0 if k is None else run + 1 if i and k == keys[i - 1] else 1
        if run > max_in_row:
            return True
    return False
