"""The one text line a product is embedded from, and its price tier."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from appliance.types import Product

TIERS: tuple[str, ...] = ("budget", "mid-range", "premium", "luxury")


def price_tier(price: float | None, thresholds: Sequence[float]) -> str | None:
    """budget / mid-range / premium / luxury by fixed ascending thresholds (config catalog.tier_thresholds)."""
    if price is None:
        return None
    for tier, upper in zip(TIERS, thresholds, strict=False):
        if price < upper:
            return tier
    return TIERS[-1]


def product_text(product: Product, thresholds: Sequence[float]) -> str:
    """`Nike Air Max | by Nike | Shoes | Sneakers | Running | Blue color | premium` (empty parts left out)."""
    parts = [product.name.strip()]
    if product.merchant:
        parts.append(f"by {product.merchant.strip()}")
    parts.extend(c.strip() for c in product.category_path if c.strip())
    if product.color:
        color = product.color.strip()
        parts.append(f"{color[:1].upper()}{color[1:]} color")
    tier = price_tier(product.price, thresholds)
    if tier:
        parts.append(tier)
    return " | ".join(parts)


def text_hash(model: str, text: str) -> str:
    """Cache key of a vector: the same line under the same model is never embedded twice."""
    return hashlib.sha256(f"{model}\n{text}".encode()).hexdigest()[:32]
