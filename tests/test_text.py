import pytest

from appliance.text import price_tier, product_text, text_hash
from appliance.types import Product

TIERS = (25.0, 100.0, 300.0)


def test_the_source_design_line() -> None:
    p = Product(1, "Nike Air Max", "Nike", ("Shoes", "Sneakers", "Running"), "blue", 150.0)
    assert product_text(p, TIERS) == "Nike Air Max | by Nike | Shoes | Sneakers | Running | Blue color | premium"


def test_missing_parts_are_left_out() -> None:
    assert product_text(Product(2, "Mug", None, ("Home",), None, None), TIERS) == "Mug | Home"


@pytest.mark.parametrize(
    ("price", "tier"),
    [(0.0, "budget"), (24.99, "budget"), (25.0, "mid-range"), (99.0, "mid-range"), (100.0, "premium"),
     (299.99, "premium"), (300.0, "luxury"), (5000.0, "luxury"), (None, None)],
)
def test_price_tiers_by_threshold(price, tier) -> None:
    assert price_tier(price, TIERS) == tier


def test_hash_depends_on_model_and_text() -> None:
    assert text_hash("m", "a") == text_hash("m", "a")
    assert text_hash("m", "a") != text_hash("m", "b")
    assert text_hash("m", "a") != text_hash("n", "a")
