"""Data set loaders: a few rows in the real file formats -> products and events, with the documented mapping."""

from datetime import datetime

import pytest

from appliance.errors import InvalidInput
from storage.datasets import load_movielens, load_online_retail, rating_event

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"American President, The (1995)",Comedy|Drama|Romance
3,Some Film (2001),(no genres listed)
"""
RATINGS = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,3.5,964981247
2,1,2.5,964982224
2,99,5.0,964982224
"""
RETAIL = '''"InvoiceNo","StockCode","Description","Quantity","InvoiceDate","UnitPrice","CustomerID","Country"
"546306","21733","RED HANGING HEART T-LIGHT HOLDER",2,"2011-03-10 16:16:00",2.95,NA,"United Kingdom"
"557055","23203","JUMBO BAG DOILEY PATTERNS",20,"2011-06-16 14:45:00",2.08,12621,"Germany"
"557056","23203","JUMBO BAG DOILEY PATTERNS",1,"2011-06-17 10:00:00",2.50,12621,"Germany"
"C557057","23203","JUMBO BAG DOILEY PATTERNS",-3,"2011-06-18 10:00:00",2.08,12621,"Germany"
"557058","85123a","WHITE HANGING HEART",6,"2011-06-16 09:00:00",2.55,17850.0,"United Kingdom"
"557059","POST","POSTAGE",1,"2011-06-16 09:00:00",18.0,17850,"United Kingdom"
'''


def test_movielens_maps_movies_and_ratings(tmp_path):
    (tmp_path / "movies.csv").write_text(MOVIES)
    (tmp_path / "ratings.csv").write_text(RATINGS)
    products, events = load_movielens(tmp_path)
    assert [p.product_id for p in products] == [1, 2, 3]
    assert products[1].name == "American President, The (1995)"
    assert products[0].category_path == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert products[2].category_path == () and products[0].price is None
    assert len(events) == 3  # the rating of unknown movie 99 is dropped
    by_pair = {(e.customer_id, e.product_id): e for e in events}
    assert by_pair[(1, 1)].event_name == "product_added_to_cart"
    assert by_pair[(1, 2)].event_name == "product_clicked"
    assert by_pair[(2, 1)].event_name == "product_viewed"
    assert by_pair[(1, 1)].ts == datetime(2000, 7, 30, 18, 45, 3)  # naive UTC of the Unix timestamp
    assert [e.ts for e in events] == sorted(e.ts for e in events)


@pytest.mark.parametrize(("rating", "name"), [(5.0, "product_added_to_cart"), (4.0, "product_added_to_cart"),
                                              (3.0, "product_clicked"), (2.5, "product_viewed")])
def test_rating_mapping(rating, name):
    assert rating_event(rating) == name


def test_online_retail_keeps_customers_purchases_and_drops_returns(tmp_path):
    path = tmp_path / "retail.csv"
    path.write_text(RETAIL)
    products, events = load_online_retail(path)
    assert [p.name for p in products] == ["RED HANGING HEART T-LIGHT HOLDER", "JUMBO BAG DOILEY PATTERNS",
                                          "WHITE HANGING HEART"]  # sorted StockCode: 21733, 23203, 85123A; no POST
    assert [p.product_id for p in products] == [1, 2, 3]
    assert products[1].price == pytest.approx(2.08)  # median of the positive prices 2.08, 2.50, 2.08
    assert all(e.event_name == "product_purchased" for e in events)
    # the NA customer, the return (C invoice, negative quantity) and postage are gone
    assert sorted((e.customer_id, e.product_id) for e in events) == [(12621, 2), (12621, 2), (17850, 3)]
    assert events[0].ts == datetime(2011, 6, 16, 9, 0)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        load_movielens(tmp_path)
