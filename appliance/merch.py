"""Merchandising rules compiled over the catalog view, for the feed's hot path: which rows the active rules hide,
which rows each boost or bury moves, where each pin goes. Compiled once per (rule set, active rules, catalog
version); a feed request with no active rule pays nothing (`NO_RULES`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.pipeline import members
from appliance.rules import Rule

_NONE = np.zeros(0, np.int64)


@dataclass(frozen=True)
class Merch:
    rules: tuple[Rule, ...]  # the active rules this was compiled from
    hidden: np.ndarray  # sorted live rows some hide rule matches
    moves: tuple[tuple[Rule, np.ndarray], ...]  # each boost or bury with the sorted rows it matches
    pins: tuple[tuple[Rule, int], ...]  # each pin with its product's row (live, not hidden), in position order

    def rescore(self, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Scores of `rows` moved by the boosts (s + strength * (1 - s)) and buries (s * (1 - strength)),
        in rule order, staying in 0..1 (the widgets' `rescore` on arrays)."""
        if not self.moves:
            return scores
        out = np.array(scores, dtype=np.float64)
        for rule, matched in self.moves:
            assert rule.strength is not None
            hit = members(matched, rows)
            out[hit] = out[hit] + rule.strength * (1 - out[hit]) if rule.kind == "boost" else \
                out[hit] * (1 - rule.strength)
        return out

    def parts(self, row: int) -> dict[str, float]:
        """The rule effects on one row, for explain=true: {"boost_rule_3": strength, ...}."""
        one = np.array([row], np.int64)
        return {f"{rule.kind}_rule_{rule.rule_id}": float(rule.strength or 0.0)
                for rule, matched in self.moves if members(matched, one)[0]}


NO_RULES = Merch((), _NONE, (), ())


def compile_rules(view: CatalogView, active: Sequence[Rule]) -> Merch:
    """The active rules as rows of `view`. A hide wins over a pin; a pin of a removed product is dropped."""
    if not active:
        return NO_RULES
    hides = [rule_rows(view, r) for r in active if r.kind == "hide"]
    hidden = np.unique(np.concatenate(hides)) if hides else _NONE
    moves = tuple((r, rule_rows(view, r)) for r in active if r.kind in ("boost", "bury"))
    pins = []
    for rule in sorted((r for r in active if r.kind == "pin"), key=lambda r: (r.position or 0, r.rule_id)):
        if rule.product_id in view.products:
            row = view.row[rule.product_id]
            if not members(hidden, np.array([row], np.int64))[0]:
                pins.append((rule, row))
    return Merch(tuple(active), hidden, moves, tuple(pins))


def rule_rows(view: CatalogView, rule: Rule) -> np.ndarray:
    """Sorted live rows the rule matches: every condition given must hold (as `Rule.matches`)."""
    rows: np.ndarray | None = None

    def narrow(found: np.ndarray) -> np.ndarray:
        return found if rows is None else np.intersect1d(rows, found, assume_unique=True)

    if rule.product_id is not None:
        rows = np.array([view.row[rule.product_id]] if rule.product_id in view.products else [], np.int64)
    if rule.brand is not None:
        rows = narrow(view.by_brand.get(rule.brand.strip().lower(), _NONE))
    if rule.category is not None:
        rows = narrow(view.category_rows([rule.category]))
    if rule.min_price is not None or rule.max_price is not None:
        if rows is None:
            rows = np.flatnonzero(view.live).astype(np.int64)
        price = view.price_all[rows]
        keep = ~np.isnan(price)  # an unpriced product matches no price range
        with np.errstate(invalid="ignore"):
            if rule.min_price is not None:
                keep &= price >= rule.min_price
            if rule.max_price is not None:
                keep &= price <= rule.max_price
        rows = rows[keep]
    return _NONE if rows is None else rows
