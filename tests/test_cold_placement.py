"""Products without events re-scored on the tower's scale (`ranking.cold_placed`): scale * cosine + offset, chosen
on validation, carried by the checkpoint, and the same order in the evaluation's tower row and the feed's personal
source."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta

import numpy as np
import pytest
import torch

from appliance.baselines import TowerScorer, prior_popularity
from appliance.config import load_config
from appliance.evaluation import cold_items, evaluate, time_split
from appliance.pipeline import FeedQuery
from appliance.prior import _placed_ndcg, ndcg_at_10
from appliance.ranking import ServingPrior, cold_placed
from appliance.recommender import FeedSettings, Personal, Recommender
from appliance.tower import UserTower
from appliance.training import train_tower
from appliance.types import Event, now_utc
from jobs import upkeep
from jobs.realtime import ServingModel
from storage.catalog import CatalogStore
from storage.events import EventStore
from storage.models import ModelMeta, load_checkpoint, save_checkpoint
from storage.vectors import VectorIndex
from tests.helpers import product
from tests.test_cold_start import launch_shop

torch.set_num_threads(2)
CFG = load_config()
WEIGHTS = dict(CFG.events.weights)


def test_cold_placed_rescores_only_the_products_without_events_and_leaves_the_identity_alone():
    cosines = np.array([[0.9, 0.5, 0.8, 0.2, 0.1]])
    scores = cosines + np.array([0.4, 0.6, 0.0, 0.0, 0.3])  # 2 and 3 have no event: no prior
    scores[0, 4] = -np.inf  # the shopper's own product
    cold = np.array([[False, False, True, True, True]])
    assert cold_placed(scores, cosines, cold, 1.0, 0.0) is scores
    assert cold_placed(scores, cosines, cold, float(torch.tensor(1.0)), float(torch.tensor(0.0))) is scores
    placed = cold_placed(scores, cosines, cold, 3.0, -1.0)
    assert placed[0, :2].tolist() == scores[0, :2].tolist() and placed[0, 4] == -np.inf
    assert placed[0, 2:4] == pytest.approx([3 * 0.8 - 1, 3 * 0.2 - 1])
    order = np.argsort(-placed[0]).tolist()
    assert order[0] == 2 and order[-2:] == [3, 4]  # the close new product first, the poor one below every known one
    assert np.argsort(-scores[0]).tolist()[:2] == [0, 1]  # without the placement the prior keeps it below both


def test_the_feed_orders_the_serving_towers_list_with_the_placement(db, tmp_path):
    now = now_utc()
    store, events = CatalogStore(db), EventStore(db)
    products = [product(i, f"P{i}") for i in range(1, 41)]
    store.upsert(products, [p.name for p in products], [f"h{p.product_id}" for p in products], now)
    events.append([Event(100 + c, pid, "product_viewed", now - timedelta(hours=2))  # products 1-30 have events
                   for pid in range(1, 31) for c in range(1 + pid % 5)], now)
    index = VectorIndex(tmp_path / "p.hnsw", 8, CFG.index)
    vectors = np.random.default_rng(1).standard_normal((41, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.upsert(np.arange(1, 41), vectors[1:])
    serving = ServingModel()
    tower = UserTower(CFG.tower, 8)
    settings = FeedSettings(1.0, 0.0, 14.0, 40, False, 600.0, 100, 100, 40)
    user = vectors[33] + vectors[5]
    personal = Personal(user / np.linalg.norm(user), popularity_weight=0.05)

    def personal_list(scale: float, offset: float) -> list[int]:
        tower.cold_scale.fill_(scale)
        tower.cold_offset.fill_(offset)
        serving.set(tower, f"v{scale}{offset}", {"training": {"prior_half_life_hours": 720.0}})
        assert upkeep.serving_prior(events, serving, CFG, now)[4:] == pytest.approx((scale, offset))
        rec = Recommender(store.all, lambda at: events.popularity(at, 72.0, WEIGHTS), index.query, now_utc, 3600.0,
                          settings, lambda at: upkeep.serving_prior(events, serving, CFG, at))
        rec.refresh_popularity()
        page = rec.feed(FeedQuery(per_page=40), personal)
        assert {item.source for item in page.items} == {"personal"}
        return [item.product_id for item in page.items]

    ids, popularity = events.popularity(now, 720.0, WEIGHTS)
    pop = dict(zip(ids.tolist(), popularity.tolist(), strict=True))
    cosine = {pid: float(vectors[pid] @ personal.vector) for pid in range(1, 41)}
    for scale, offset in ((1.0, 0.0), (3.0, -0.6), (1.0, -5.0)):
        expected = sorted(range(1, 41), key=lambda p: -(cosine[p] + 0.05 * math.log1p(pop[p]) if p <= 30 else
                                                         scale * cosine[p] + offset))
        served = personal_list(scale, offset)
        assert served[:30] == expected[:30]  # float32 cosines from the index: the tail may swap near-ties
    assert max(personal_list(1.0, -5.0).index(p) for p in range(1, 31)) == 29  # buried: every known one first
    placed = personal_list(3.0, -0.6)
    assert placed.index(33) < 5 < min(placed.index(p) for p in range(31, 41) if cosine[p] < 0.2)
    prior = ServingPrior.of(np.array([1.0, 0.0]), 0.0, 0.0, 2.0, -1.0)
    lift = prior.placed(np.array([0, 1, 5]), np.array([0.1, 0.5, 0.9]), np.zeros(3))  # added to the cosines
    assert lift == pytest.approx([0.0, 0.5 - 1.0, 0.9 - 1.0])  # 1 has no event, 5 was added since: 2 x cos - 1


def test_training_chooses_a_placement_where_new_products_are_the_next_ones_and_evaluation_ranks_with_it(tmp_path):
    inter, vectors = launch_shop()
    training = dataclasses.replace(CFG.training, epochs=1, batch_size=64, cold_slots=False)
    model, report = train_tower(inter, vectors, CFG.tower, training, WEIGHTS, 72.0)
    assert (report.cold_scale, report.cold_offset) != (1.0, 0.0)
    assert float(model.cold_scale) == pytest.approx(report.cold_scale)
    assert float(model.cold_offset) == pytest.approx(report.cold_offset)
    assert report.cold_placements[0][:2] == (report.cold_scale, report.cold_offset)
    unplaced = next(row for row in report.cold_placements if row[:2] == (1.0, 0.0))
    assert report.cold_placements[0][3] > unplaced[3]  # validation: the cold positives rank higher
    off, off_report = train_tower(inter, vectors, CFG.tower, dataclasses.replace(training, cold_placement=False),
                                  WEIGHTS, 72.0)
    assert (float(off.cold_scale), float(off.cold_offset)) == (1.0, 0.0) == (off_report.cold_scale,
                                                                          off_report.cold_offset)

    split = time_split(inter, 1)
    popularity = prior_popularity(split.train, len(vectors), WEIGHTS, "moment", 72.0)
    plain_model = UserTower(model.config, model.dim)
    plain_model.load_state_dict(model.state_dict())
    plain_model.cold_scale.fill_(1.0)
    plain_model.cold_offset.fill_(0.0)
    placed = TowerScorer(model, split.train, vectors, popularity)
    plain = TowerScorer(plain_model, split.train, vectors, popularity, "plain")
    cold = evaluate([placed, plain], split, len(vectors), CFG.evaluation, items=cold_items(split, len(vectors)))
    assert cold["models"]["tower"]["ndcg@10"] > cold["models"]["plain"]["ndcg@10"]

    path = tmp_path / "m.pt"
    save_checkpoint(path, model, ModelMeta(encoder_model="m", data_first=0.0, data_last=1.0))
    loaded = load_checkpoint(path)[0]
    assert (float(loaded.cold_scale), float(loaded.cold_offset)) == (float(model.cold_scale),
                                                                    float(model.cold_offset))


def test_the_validations_shortcut_gives_the_ndcg_of_the_placed_scores():
    rng = np.random.default_rng(3)
    cosines = rng.uniform(-0.2, 0.9, (40, 300)).astype(np.float32)
    scores = cosines + 0.1 * rng.uniform(0, 5, (1, 300)).astype(np.float32)  # the known products' prior
    cold = np.broadcast_to((np.arange(300) % 7 == 0)[None, :], scores.shape)
    scores = np.where(cold, cosines, scores)
    scores[rng.random(scores.shape) < 0.05] = -np.inf  # the shoppers' own products
    positive = np.where(np.arange(40) % 3 == 0, 7 * rng.integers(1, 40, 40), rng.integers(0, 300, 40))
    scores[np.arange(40), positive] = cosines[np.arange(40), positive]  # never excluded (and cold ones unprized)
    grid = [(1.0, 0.0), (2.0, -0.5), (3.0, -1.2), (6.0, -3.0), (1.5, 0.2)]
    fast = _placed_ndcg(scores, cosines, cold, positive, grid)
    for g, (scale, offset) in enumerate(grid):
        exact = ndcg_at_10(cold_placed(scores, cosines, cold, scale, offset), positive[:, None])
        assert fast[g] == pytest.approx(exact)
    assert len({tuple(row) for row in fast}) > 2  # the grid moves the cold positives
