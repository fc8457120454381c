"""Merchandising rules (Algolia Rules, Recombee boosters): pin a product at a position, hide products, brands
or categories, boost or bury by product, brand, category or price range, each with an optional active period.
Pure functions: the pipeline (appliance/pipeline.py) applies them to every widget's picks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec

from appliance.errors import InvalidInput
from appliance.types import Pick, Product

RULE_KINDS = ("pin", "hide", "boost", "bury")


@dataclass(frozen=True)
class Rule:
    kind: str  # pin / hide / boost / bury
    product_id: int | None = None  # pin: the product pinned; otherwise one product the rule matches
    brand: str | None = None  # the products matched (all conditions given must hold), case-insensitive
    category: str | None = None  # any level of the category path
    min_price: float | None = None
    max_price: float | None = None
    position: int | None = None  # pin: 1-based place in every list the product may appear in
    strength: float | None = None  # boost: score + s * (1 - score); bury: score * (1 - s); s in (0, 1]
    starts_at: datetime | None = None  # naive UTC; active from (inclusive) ...
    ends_at: datetime | None = None  # ... until (exclusive); None: open
    rule_id: int = 0

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(RULE_KINDS)}", field="kind")
        if self.kind == "pin" and (self.product_id is None or self.position is None):
            raise InvalidInput("a pin needs product_id and position", field="position")
        if self.position is not None and (self.kind != "pin" or self.position < 1):
            raise InvalidInput("position is for pins and counts from 1", field="position")
        conditions = (self.product_id, self.brand, self.category, self.min_price, self.max_price)
        if self.kind != "pin" and all(c is None for c in conditions):
            raise InvalidInput("give product_id, brand, category or a price range to match", field="kind")
        if self.kind in ("boost", "bury") and self.strength is None:
            raise InvalidInput("boost and bury need a strength in (0, 1]", field="strength")
        if self.strength is not None and (self.kind not in ("boost", "bury") or not 0 < self.strength <= 1):
            raise InvalidInput("strength is for boost and bury, in (0, 1]", field="strength")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise InvalidInput("min_price must not exceed max_price", field="min_price")
        if self.starts_at and self.ends_at and self.starts_at >= self.ends_at:
            raise InvalidInput("starts_at must be before ends_at", field="ends_at")

    def active(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and (self.ends_at is None or now < self.ends_at)

    def matches(self, product: Product) -> bool:
        if self.product_id is not None and product.product_id != self.product_id:
            return False
        if self.brand is not None and (product.merchant or "").lower() != self.brand.lower():
            return False
        if self.category is not None and self.category.lower() not in {c.lower() for c in product.category_path}:
            return False
        price = product.price
        if self.min_price is not None and (price is None or price < self.min_price):
            return False
        return not (self.max_price is not None and (price is None or price > self.max_price))


def rescore(picks: Sequence[Pick], products: Mapping[int, Product], rules: Sequence[Rule]) -> list[Pick]:
    """Hidden products out; boosted and buried scores moved (staying in 0..1); best first again."""
    if not any(r.kind in ("hide", "boost", "bury") for r in rules):  # nothing to move: the known ones, in order
        return sorted((p for p in picks if p.product_id in products), key=lambda p: -p.score)
    out = []
    for pick in picks:
        product = products.get(pick.product_id)
        if product is None or any(r.kind == "hide" and r.matches(product) for r in rules):
            continue
        score, parts = pick.score, dict(pick.parts)
        for rule in rules:
            if rule.kind in ("boost", "bury") and rule.matches(product):
                assert rule.strength is not None
                score = score + rule.strength * (1 - score) if rule.kind == "boost" else score * (1 - rule.strength)
                parts[f"{rule.kind}_rule_{rule.rule_id}"] = rule.strength
        out.append(msgspec.structs.replace(pick, score=score, parts=parts) if parts != pick.parts else pick)
    return sorted(out, key=lambda p: -p.score)  # stable: equal scores keep the source's order


def pin(picks: Sequence[Pick], pins: Sequence[Rule]) -> list[Pick]:
    """Each pinned product moved (or brought in) to its position; it takes the score of the place it takes,
    so scores still read best first. Pins are placed in position order."""
    out = list(picks)
    for rule in sorted(pins, key=lambda r: (r.position or 0, r.rule_id)):
        assert rule.position is not None and rule.product_id is not None
        out = [p for p in out if p.product_id != rule.product_id]
        at = min(rule.position - 1, len(out))
        score = out[at].score if at < len(out) else (out[-1].score if out else 1.0)
        out.insert(at, Pick(rule.product_id, score, "pinned", "pinned", {"pin_rule": float(rule.rule_id)}))
    return out
