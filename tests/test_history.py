"""A shop's own history: old events personalise and rank, nothing imported vanishes, too little data is one
sentence. Real DuckDB, the real encoder and hnswlib, the CLI in-process."""

from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest

from appliance.config import load_config
from appliance.examples import make_examples
from appliance.interactions import Interactions
from appliance.recommender import FeedQuery
from appliance.types import Event, Product, now_utc
from tests.helpers import SHOES, product
from web.cli import main
from web.services import Services, build_services

YEAR_AGO = now_utc() - timedelta(days=400)


def _services(tmp_path, encoder, **sections) -> Services:
    config = load_config(overrides={"server": {"data_dir": str(tmp_path / "data"), "load_demo": False}, **sections})
    return build_services(config, encoder)


@pytest.fixture
def shop(tmp_path, encoder) -> Iterator[Services]:
    """Six running shoes and a frying pan (no created_at: arrival unknown), embedded and indexed."""
    services = _services(tmp_path, encoder)
    products = [product(i, name, price, merchant=m, category_path=tuple(c), color=col)
                for i, (name, m, c, col, price) in enumerate(SHOES, start=1)]
    products.append(Product(7, "Tefal Non-Stick Frying Pan", price=35.0))
    services.catalog.upsert(products, now_utc(), embed_now=False)
    services.indexer.run_once()
    yield services
    services.close()


def test_popularity_of_months_old_events_ranks_by_decayed_counts_from_the_newest_event(shop: Services) -> None:
    half_life = shop.config.feed.popularity_half_life_hours
    clicks = [Event(1, 2, "product_clicked", YEAR_AGO)] * 3 + [Event(2, 3, "product_purchased", YEAR_AGO)]
    clicks.append(Event(3, 4, "product_viewed", YEAR_AGO - timedelta(hours=half_life)))
    shop.events.append(clicks, now_utc())
    ids, scores = shop.events.popularity(now_utc(), half_life, shop.config.events.weights)
    got = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    assert got == pytest.approx({2: 6.0, 3: 8.0, 4: 0.05})  # ages from the newest event: 0 h, 0 h, one half-life
    page = shop.recommender.feed(_query())
    assert [s.product_id for s in page.items[:3]] == [3, 2, 4]
    # on the 0..1 scale: popularity relative to the most popular product
    assert [s.score for s in page.items[:3]] == pytest.approx([1.0, 6.0 / 8.0, 0.05 / 8.0])


def test_a_product_without_created_at_is_never_a_new_arrival(shop: Services) -> None:
    shop.catalog.upsert([product(8, "Brand New Trail Shoe", created_at=now_utc() - timedelta(days=1))], now_utc(),
                        embed_now=True)
    shop.recommender.refresh_popularity()  # the ranking that holds the new arrivals, recomputed now
    new_rows = shop.recommender.live.ranked().new_rows
    assert shop.recommender.view().ids[new_rows].tolist() == [8]


def test_a_shoppers_vector_comes_from_their_last_interactions_however_old(shop: Services) -> None:
    shop.events.append([Event(9, 1, "product_purchased", YEAR_AGO), Event(9, 2, "product_clicked", YEAR_AGO)],
                       now_utc())
    assert shop.updater.update([9])[9] != "none"
    assert shop.users.get(9).last_event_at == YEAR_AGO


def test_with_a_window_set_old_history_leaves_the_vector(tmp_path, encoder) -> None:
    services = _services(tmp_path, encoder, realtime={"history_window_hours": 48.0})
    try:
        services.catalog.upsert([product(1, "Mug")], now_utc(), embed_now=True)
        services.indexer.sync_index()
        services.events.append([Event(9, 1, "product_clicked", YEAR_AGO)], now_utc())
        assert services.updater.update([9]) == {9: "none"} and services.users.get(9) is None
    finally:
        services.close()


def test_the_updater_never_deletes_a_vector_it_cannot_recompute(shop: Services) -> None:
    shop.events.append([Event(9, 1, "product_clicked", YEAR_AGO)], now_utc())
    shop.updater.update([9])
    before = shop.users.get(9).vector
    shop.index.remove(np.array([1]))  # the product's vector is not there (e.g. an index not loaded yet)
    assert shop.updater.update([9]) == {9: "kept"}
    np.testing.assert_array_equal(shop.users.get(9).vector, before)


def test_purchased_products_are_left_out_of_a_popular_feed_too(shop: Services) -> None:
    shop.events.append([Event(5, 2, "product_purchased", YEAR_AGO), Event(6, 3, "product_clicked", YEAR_AGO)],
                       now_utc())
    who = shop.feeds.personal(5)
    assert who.vector is None and who.purchased == {2}  # no vector: a popular feed
    page = shop.recommender.feed(_query(), who)
    assert not page.personalized and 2 not in [s.product_id for s in page.items]
    assert 2 not in [s.product_id for s in shop.recommender.feed(_query(sort="price_asc"), who).items]
    assert 2 in [s.product_id for s in shop.recommender.feed(_query(), shop.feeds.personal(6)).items]


def _query(**kw) -> FeedQuery:
    return FeedQuery(per_page=20, **kw)


def test_evaluate_and_train_with_too_little_data_say_so_in_one_sentence(tmp_path, capsys) -> None:
    data = str(tmp_path / "data")
    for command in ("evaluate", "train"):
        assert main([command, "--data-dir", data]) == 2
        err = capsys.readouterr().err.strip()  # the log lines of opening the store, then the one sentence
        assert "Traceback" not in err
        assert err.splitlines()[-1] == f"appliance: not enough data to {command}: no events with an embedded product " \
                      "(import products and events first)"
    events = tmp_path / "e.csv"  # one customer, one product: nothing to test or train on
    events.write_text("customer_id,product_id,event_name,timestamp\n1,1,product_viewed,2011-01-01T00:00:00\n")
    products = tmp_path / "p.csv"
    products.write_text("product_id,name\n1,Mug\n")
    assert main(["import", "products", str(products), "--data-dir", data]) == 0
    assert main(["import", "events", str(events), "--data-dir", data]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--data-dir", data]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.splitlines()[-1:] == [
        "appliance: not enough data to evaluate: 1 events of 1 customers, and none of them interacted "
        "with a new product after an earlier one (at least one such customer is needed to test on)"]
    assert main(["jobs", "run", "retrain", "--data-dir", data]) == 2
    out = capsys.readouterr().out
    assert "retrain: skipped" in out and "not enough data to train: 1 events of 1 customers since 2010-12-02" in out


def test_an_import_warns_about_rows_past_a_set_retention_and_makes_its_shoppers_live(tmp_path, capsys) -> None:
    config = tmp_path / "shop.toml"
    config.write_text("[jobs]\nretention_days = 365.0\n[server]\nload_demo = false\n")
    data = str(tmp_path / "data")
    (tmp_path / "p.csv").write_text("product_id,name,price\n1,Mug,3.5\n2,Teapot,12\n")
    recent = (now_utc() - timedelta(days=3)).isoformat()
    (tmp_path / "e.csv").write_text("customer_id,product_id,event_name,timestamp\n"
                                    "1,1,product_purchased,2011-01-01T00:00:00\n"
                                    f"2,2,product_clicked,{recent}\n")
    assert main(["import", "products", str(tmp_path / "p.csv"), "--data-dir", data, "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["import", "events", str(tmp_path / "e.csv"), "--data-dir", data, "--config", str(config)]) == 0
    done = capsys.readouterr()
    assert "warning: 1 of these 2 events are older than jobs.retention_days = 365" in done.err
    assert "2 of 2 shoppers have a personal vector; 2 products have popularity" in done.out  # the 2011 one too


def test_training_examples_follow_a_set_serving_window_as_serving_does() -> None:
    hour = 3600.0
    # customer 1: views 0 at t=0, 1 at 100 h, buys 2 at 101 h, views 3 at 300 h
    inter = Interactions.from_arrays([1] * 4, [0, 1, 2, 3], [0, 0, 5, 0], [0.0, 100 * hour, 101 * hour, 300 * hour])

    def histories(window: float) -> dict[int, list[int]]:
        ex = make_examples(inter, history=20, window_hours=window)
        return {int(inter.item[t]): inter.item[r[m]].tolist() for t, r, m in zip(ex.target, ex.rows, ex.mask,
                                                                                   strict=True)}

    assert histories(0.0) == {1: [0], 2: [0, 1], 3: [0, 1, 2]}  # no window: the last 20, however old
    assert histories(48.0) == {2: [1]}  # 48 h: item 1's and item 3's histories are empty, so no example


def test_a_shopper_whose_products_were_not_embedded_yet_gets_a_vector_once_they_are(tmp_path, encoder) -> None:
    services = _services(tmp_path, encoder)
    try:
        services.catalog.upsert([product(1, "Mug"), product(2, "Teapot")], now_utc(), embed_now=False)
        services.events.append([Event(9, 1, "product_clicked", YEAR_AGO)], now_utc())
        assert services.updater.update([9]) == {9: "kept"} and services.updater.waiting == {9}
        assert services.updater.retry_waiting() == 0  # the index has not grown: nothing to retry
        services.indexer.run_once()  # the background embedder's pass
        assert services.updater.retry_waiting() == 1
        assert services.users.get(9) is not None and not services.updater.waiting
    finally:
        services.close()
