"""Products without events: ranked at the tower's cold quantile of the known products' prior, the same way in
training, evaluation and serving (where the prior's popularity has the half-life the tower was trained with)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pytest
import torch

from appliance.baselines import RecentPopularityScorer, tower_prior
from appliance.config import load_config
from appliance.examples import Examples, MomentPrior
from appliance.interactions import Interactions
from appliance.pipeline import FeedQuery
from appliance.ranking import ServingPrior, cold_popularity, popularity_prior
from appliance.recommender import FeedSettings, Personal, Recommender
from appliance.tower import UserTower
from appliance.training import train_tower
from appliance.types import Event, now_utc
from jobs import upkeep
from jobs.realtime import ServingModel
from storage.catalog import CatalogStore
from storage.events import EventStore
from storage.models import FORMAT, load_checkpoint
from storage.vectors import VectorIndex
from tests.helpers import product

torch.set_num_threads(2)
CFG = load_config()
WEIGHTS = dict(CFG.events.weights)
HOUR = 3600.0


def test_a_product_first_seen_after_an_examples_moment_is_cold_then_and_takes_the_quantile():
    # customers 1-3 touch products 0-2 early; customer 4 views 0, then product 5 (nobody's before), then 1
    inter = Interactions.from_arrays(
        [1, 2, 2, 3, 3, 3, 4, 4, 4], [0, 1, 0, 2, 1, 0, 0, 5, 1], [0] * 9,
        [0.0, HOUR, HOUR, 2 * HOUR, 2 * HOUR, 2 * HOUR, 5 * HOUR, 6 * HOUR, 7 * HOUR], n_items=8)
    examples = Examples(np.array([[6], [6]]), np.ones((2, 1), bool), np.array([7, 8]))  # positives 5 and 1
    prior = MomentPrior(inter, 8, WEIGHTS, half_life_hours=1000.0)
    assert prior.is_cold(examples).tolist() == [True, False]
    plain = prior.rows(examples).numpy()
    assert plain[0, 5] == 0.0  # off: the new product sits below every known one
    prior.set_cold_quantile(1.0)
    rows = prior.rows(examples).numpy()
    known = [0, 1, 2]
    assert rows[0, 5] == pytest.approx(rows[0, known].max(), rel=1e-3)  # as popular as the most popular known
    assert rows[0, 3] == rows[0, 5] and np.allclose(rows[:, known], plain[:, known])  # the known keep theirs
    assert prior.positive(examples)[0].item() == pytest.approx(rows[0, 5])


def test_evaluation_ranks_cold_products_with_the_towers_own_quantile():
    inter = Interactions.from_arrays([1, 1, 2, 3], [0, 1, 1, 2], [0] * 4, [0.0, HOUR, HOUR, 2 * HOUR], n_items=5)
    scorer = RecentPopularityScorer(inter, 5, WEIGHTS, 1000.0)
    model = UserTower(CFG.tower, 8)
    at = np.array([3 * HOUR])
    popularity = scorer.scores(np.array([9]), at)
    assert tower_prior(model, scorer, np.array([9]), at).tolist() == popularity_prior(popularity).tolist()
    model.cold_quantile.fill_(0.5)
    prior = tower_prior(model, scorer, np.array([9]), at)[0]
    known = popularity[0, :3]
    # the median known one, as of the snapshot before the moment (the events since count in `known`, not there)
    assert prior[3] == prior[4] == pytest.approx(np.log1p(np.sort(known)[1]), rel=1e-2)


def launch_shop(seed=0, n_items=160, n_customers=60, dim=64):
    """Products in 4 clusters launch one after another over 16 days; each customer, loyal to one cluster, mostly
    picks the newest products of it: new products are the likely next ones, and their text says which."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, dim))
    cluster = np.arange(n_items) % 4
    vectors = centers[cluster] / np.sqrt(dim) * 3 + rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    launch = np.arange(n_items) * (16 * 24 * HOUR / n_items)
    customers, items, times = [], [], []
    for c in range(n_customers):
        taste = c % 4
        for t in np.sort(rng.uniform(HOUR, 16 * 24 * HOUR, size=10)):
            out = np.flatnonzero((cluster == taste) & (launch <= t))
            if len(out):
                customers.append(c), items.append(out[-min(len(out), rng.integers(1, 3))]), times.append(t)
    return Interactions.from_arrays(customers, items, [0] * len(items), times, n_items=n_items), vectors


def test_training_chooses_a_cold_quantile_where_new_products_are_the_next_ones_and_records_the_half_life():
    inter, vectors = launch_shop()
    training = dataclasses.replace(CFG.training, epochs=1, batch_size=64, cold_start_prior=True)
    model, report = train_tower(inter, vectors, CFG.tower, training, WEIGHTS, 72.0)
    assert report.cold_quantile > 0.0 and float(model.cold_quantile) == pytest.approx(report.cold_quantile)
    assert report.prior_half_life_hours == 72.0
    off, off_report = train_tower(inter, vectors, CFG.tower, dataclasses.replace(training, cold_start_prior=False),
                                  WEIGHTS, 72.0)
    assert float(off.cold_quantile) == 0.0 == off_report.cold_quantile
    assert report.best_validation_ndcg >= (1 - 0.02) * off_report.best_validation_ndcg


def test_a_checkpoint_saved_before_the_cold_quantile_loads_with_cold_products_at_zero(tmp_path):
    model = UserTower(CFG.tower, 8)
    state = {k: v for k, v in model.state_dict().items() if k not in ("cold_quantile", "cold_share")}
    meta = {"encoder_model": "m", "data_first": 0.0, "data_last": 1.0, "tower": dataclasses.asdict(CFG.tower),
            "dim": 8}
    torch.save({"format": FORMAT, "meta": meta, "state_dict": state}, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert float(loaded.cold_quantile) == 0.0 == float(loaded.cold_share)


def test_serving_ranks_the_prior_with_the_trained_half_life_and_new_products_at_the_cold_value(db, tmp_path):
    now = now_utc()
    store, events = CatalogStore(db), EventStore(db)
    products = [product(i, f"P{i}") for i in range(1, 41)]
    store.upsert(products, [p.name for p in products], [f"h{p.product_id}" for p in products], now)
    # product 1: one recent view; product 2: many views ten days ago (different shoppers): the feed's 72 h list
    # ranks 1 above 2, the trained 720 h list 2 above 1
    events.append([Event(1, 1, "product_viewed", now - timedelta(hours=1))]
                  + [Event(100 + i, 2, "product_viewed", now - timedelta(days=10)) for i in range(6)], now)
    index = VectorIndex(tmp_path / "p.hnsw", 8, CFG.index)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((41, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.upsert(np.arange(1, 41), vectors[1:])
    serving = ServingModel()
    tower = UserTower(CFG.tower, 8)
    tower.cold_quantile.fill_(1.0)
    serving.set(tower, "v1", {"training": {"prior_half_life_hours": 720.0}})
    ids, trained, quantile, share = upkeep.serving_prior(events, serving, CFG, now)
    assert quantile == 1.0 and share == 0.0
    assert dict(zip(ids.tolist(), trained.tolist(), strict=True)) == pytest.approx(
        dict(zip(*(a.tolist() for a in events.popularity(now, 720.0, WEIGHTS)), strict=True)))
    feed_ids, feed = events.popularity(now, 72.0, WEIGHTS)
    assert feed[feed_ids == 1] > feed[feed_ids == 2] and trained[ids == 1] < trained[ids == 2]

    settings = FeedSettings(1.0, 0.0, 14.0, 40, False, 600.0, 100, 100, 40)
    rec = Recommender(store.all, lambda at: events.popularity(at, 72.0, WEIGHTS), index.query_many, now_utc, 3600.0,
                      settings, lambda at: upkeep.serving_prior(events, serving, CFG, at))
    rec.refresh_popularity()
    user = vectors[5] + vectors[7]
    page = rec.feed(FeedQuery(per_page=40), Personal(user / np.linalg.norm(user), popularity_weight=0.3))
    view = rec.view()
    rows = np.array([view.row[s.product_id] for s in page.items])
    popularity = np.zeros(len(view))
    popularity[[view.row[i] for i in ids.tolist()]] = trained
    expected = ServingPrior.of(popularity, 1.0)
    key = np.array([s.score - 1.0 for s in page.items]) + 0.3 * expected.values[rows]
    assert key.tolist() == sorted(key.tolist(), reverse=True)  # cosine + weight * the trained prior, descending
    known = popularity > 0
    assert expected.cold == pytest.approx(float(np.log1p(cold_popularity(popularity, known, 1.0)[0])))
    assert expected.values[view.row[3]] == expected.cold == expected.values.max()  # no events: the quantile's
    assert expected.at(np.array([len(view) + 5])).tolist() == [expected.cold]  # a row added after the refresh
