"""Products without events at a share of the tower's list (`ranking.cold_slots`): the same order in the evaluation's
tower row and in the feed's personal source, the share chosen on validation and carried by the checkpoint."""

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
from appliance.interactions import Interactions, history_inputs
from appliance.pipeline import FeedQuery
from appliance.prior import COLD_SHARES, ndcg_at_10, pick_cold_share
from appliance.ranking import ServingPrior, Source, cold_slots, cold_slotted, cold_slotted_each, interleave
from appliance.recommender import FeedSettings, Personal, Recommender
from appliance.tower import UserTower, user_vectors
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


def test_cold_slots_give_the_share_of_places_at_fixed_slots_each_product_once():
    order, cold = np.arange(40), np.array([100, 101, 7, 102, 103])
    slotted = cold_slots(order, cold, 0.1, 40)
    places = np.flatnonzero(slotted >= 100)
    assert slotted[places].tolist() == [100, 101, 102, 103]  # in their own order; 7 keeps its place in the tower's
    assert places[0] < 10 and np.diff(places).tolist() == [10, 10, 10]  # one in every ten, the first in the top 10
    assert len(set(slotted.tolist())) == 40
    assert cold_slots(order, cold, 0.1, 12).tolist() == slotted[:12].tolist()  # a prefix: pages join
    assert cold_slots(order, cold, 0.0, 12).tolist() == order[:12].tolist()
    assert cold_slots(order, cold[:0], 0.3, 12).tolist() == order[:12].tolist()
    assert len(np.flatnonzero(cold_slots(order, cold, 0.2, 40) >= 100)) == 4  # more share: all four, sooner
    assert np.flatnonzero(cold_slots(order, cold, 0.2, 40) >= 100)[0] < places[0]
    for share in (0.1, 0.15):  # the share as the checkpoint's float32 buffer holds it: the same slots
        stored = float(torch.tensor(share))
        assert stored != share and cold_slots(order, cold, stored, 40).tolist() == cold_slots(order, cold, share,
                                                                                              40).tolist()


@pytest.mark.parametrize("share", [0.05, 0.1, 0.2, 0.3, 0.5])
def test_cold_slots_are_the_smooth_round_robin_of_the_two_lists_however_long(share):
    rng = np.random.default_rng(int(share * 100))
    order = rng.permutation(300)
    cold_order = rng.choice(order, size=12, replace=False)  # some also high in the tower's own order
    none = np.zeros(300)
    whole, _, _ = interleave([Source("personal", order, none, 1 - share), Source("cold", cold_order, none, share)], 300)
    assert cold_slots(order, cold_order, share, 300).tolist() == whole.tolist()


def test_cold_slotted_orders_whole_rows_like_cold_slots_and_leaves_the_rest_below():
    rng = np.random.default_rng(0)
    cosines = rng.uniform(-1, 1, (3, 50))
    prior = np.where(np.arange(50) < 40, 1.0, 0.0)  # products 40-49 without events: the prior buries them
    scores = cosines + prior
    scores[0, 3] = -np.inf  # the customer's own product: left out
    cold = (np.arange(50) >= 40)[None, :]
    out = cold_slotted(scores, cosines, cold, 0.2, 20)
    for r in range(3):
        tower = np.argsort(-scores[r], kind="stable")
        tower = tower[np.isfinite(scores[r, tower])]
        similar = 40 + np.argsort(-cosines[r, 40:], kind="stable")
        expected = cold_slots(tower[:20], similar, 0.2, 20)
        assert np.argsort(-out[r], kind="stable")[:20].tolist() == expected.tolist()
        rest = np.setdiff1d(np.arange(50), expected)
        assert out[r, rest].max() < out[r, expected].min()
    assert out[0, 3] == -np.inf
    assert cold_slotted(scores, cosines, cold, 0.0, 20) is scores


def test_the_ablation_ranks_the_slots_by_the_towers_text_side_and_the_tower_row_by_its_cosine():
    inter, vectors = launch_shop(dim=32)
    split = time_split(inter, 1)
    model = UserTower(dataclasses.replace(CFG.tower, width=32, heads=2), vectors.shape[1]).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # an attention branch that has learned something: the tower leaves its text side
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
        model.cold_share.fill_(0.3)
        model.popularity_weight.fill_(100.0)  # every product with an event above every one without
    popularity = prior_popularity(split.train, len(vectors), WEIGHTS, "end", math.inf)
    customers, at = np.unique(split.test.customer), np.full(len(np.unique(split.test.customer)), split.train.ts.max())
    cold = np.flatnonzero(popularity <= 0)
    assert len(cold) > 5
    by_text = TowerScorer(model, split.train, vectors, popularity, "text", cold_by_text=True).scores(customers, at)
    by_tower = TowerScorer(model, split.train, vectors, popularity).scores(customers, at)
    length = model.config.history
    arrays = history_inputs(split.train, vectors, customers, at, length)
    sides = {"text": user_vectors(model, *arrays, attention=False) @ vectors.T,
             "tower": user_vectors(model, *arrays) @ vectors.T}
    differ = 0
    for scores, side in ((by_text, sides["text"]), (by_tower, sides["tower"])):
        for r in range(len(customers)):
            top = np.argsort(-scores[r], kind="stable")[:30]
            placed = top[np.isin(top, cold)]  # the cold products: at the slots only, in their order
            assert len(placed) >= 5
            unseen = cold[np.isfinite(scores[r, cold])]
            assert placed.tolist() == unseen[np.argsort(-side[r, unseen], kind="stable")][:len(placed)].tolist()
    for r in range(len(customers)):
        differ += np.argsort(-by_text[r])[:30].tolist() != np.argsort(-by_tower[r])[:30].tolist()
    assert differ > 0


def test_training_chooses_a_cold_share_where_new_products_are_the_next_ones_and_evaluation_ranks_with_it(tmp_path):
    inter, vectors = launch_shop()
    training = dataclasses.replace(CFG.training, epochs=1, batch_size=64)
    model, report = train_tower(inter, vectors, CFG.tower, training, WEIGHTS, 72.0)
    assert report.cold_share > 0.0 and float(model.cold_share) == pytest.approx(report.cold_share)
    off, off_report = train_tower(inter, vectors, CFG.tower, dataclasses.replace(training, cold_slots=False),
                                  WEIGHTS, 72.0)
    assert float(off.cold_share) == 0.0 == off_report.cold_share

    split = time_split(inter, 1)
    popularity = prior_popularity(split.train, len(vectors), WEIGHTS, "moment", 72.0)
    slotted = TowerScorer(model, split.train, vectors, popularity)
    plain = TowerScorer(model, split.train, vectors, popularity, "plain", cold_share=0.0)
    cold = evaluate([slotted, plain], split, len(vectors), CFG.evaluation, items=cold_items(split, len(vectors)))
    assert cold["models"]["tower"]["ndcg@10"] > cold["models"]["plain"]["ndcg@10"]

    path = tmp_path / "m.pt"
    save_checkpoint(path, model, ModelMeta(encoder_model="m", data_first=0.0, data_last=1.0))
    assert float(load_checkpoint(path)[0].cold_share) == pytest.approx(report.cold_share)


def test_the_feed_puts_products_without_events_at_the_serving_towers_slots(db, tmp_path):
    now = now_utc()
    store, events = CatalogStore(db), EventStore(db)
    products = [product(i, f"P{i}") for i in range(1, 41)]
    store.upsert(products, [p.name for p in products], [f"h{p.product_id}" for p in products], now)
    events.append([Event(100 + c, pid, "product_viewed", now - timedelta(hours=2))  # products 1-30 have events
                   for pid in range(1, 31) for c in range(1 + pid % 5)], now)
    index = VectorIndex(tmp_path / "p.hnsw", 8, CFG.index)
    vectors = np.random.default_rng(0).standard_normal((41, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.upsert(np.arange(1, 41), vectors[1:])
    serving = ServingModel()
    tower = UserTower(CFG.tower, 8)
    settings = FeedSettings(1.0, 0.0, 14.0, 40, False, 600.0, 100, 100, 40)
    user = vectors[33] + vectors[5]
    personal = Personal(user / np.linalg.norm(user), popularity_weight=30.0)  # the prior buries 31-40

    def personal_list(share: float) -> list[int]:
        tower.cold_share.fill_(share)
        serving.set(tower, f"v{share}", {"training": {"prior_half_life_hours": 720.0}})
        assert upkeep.serving_prior(events, serving, CFG, now)[3] == pytest.approx(share)
        rec = Recommender(store.all, lambda at: events.popularity(at, 72.0, WEIGHTS), index.query_many, now_utc, 3600.0,
                          settings, lambda at: upkeep.serving_prior(events, serving, CFG, at))
        rec.refresh_popularity()
        page = rec.feed(FeedQuery(per_page=40), personal)
        assert {item.source for item in page.items} == {"personal"}
        return [item.product_id for item in page.items]

    plain, slotted = personal_list(0.0), personal_list(0.2)
    assert min(plain.index(p) for p in range(31, 41)) >= 30  # without slots every unknown product comes last
    cosine = {pid: float(vectors[pid] @ personal.vector) for pid in range(1, 41)}
    by_similarity = sorted(range(31, 41), key=cosine.__getitem__, reverse=True)
    expected = cold_slots(np.array(plain), np.array(by_similarity), 0.2, 40).tolist()
    assert slotted == expected and slotted.index(by_similarity[0]) < 10
    prior = ServingPrior.of(np.array([1.0, 0.0]), 0.0, 0.5)
    assert prior.slotted(np.array([0, 1, 5]), np.array([0.1, 0.5, 0.9])).tolist() == [0, 2, 1]  # 5: added since


def test_the_validation_choice_of_the_cold_share_sees_the_ndcg_at_10_of_the_whole_slotted_rows():
    """`choose_cold_share` slots 10 places for every share at once (`cold_slotted_each`, prior.CHOICE_DEPTH):
    each share's rows equal `cold_slotted`'s, and their NDCG@10 equals that of the rows slotted 100 deep."""
    rng = np.random.default_rng(5)
    cosines = rng.uniform(-1, 1, (40, 300)).astype(np.float32)
    scores = cosines + 0.3 * (np.arange(300) % 7 != 0)  # one product in 7 without events: the prior buries it
    scores[rng.random(scores.shape) < 0.05] = -np.inf  # the customers' own products
    cold = (np.arange(300) % 7 == 0)[None, :]
    relevant = np.argsort(-cosines, axis=1)[np.arange(40), rng.integers(0, 30, 40)][:, None]  # some cold, near the top
    shares = (0.0, 0.05, 0.1, 0.2, 0.3)
    each = cold_slotted_each(scores, cosines, cold, shares, 100)
    assert each[0] is scores
    for share, slotted in zip(shares, each, strict=True):
        assert np.array_equal(slotted, cold_slotted(scores, cosines, cold, share, 100))
    shallow = cold_slotted_each(scores, cosines, cold, shares, 10)
    for deep, few in zip(each, shallow, strict=True):
        assert np.array_equal(ndcg_at_10(deep, relevant), ndcg_at_10(few, relevant))
    moved = [ndcg_at_10(s, relevant) for s in each]
    assert not np.array_equal(moved[0], moved[-1]) and (moved[-1] > 0).sum() >= 5  # the slots move the positives


def test_the_share_rule_takes_the_most_room_the_tolerance_allows_or_the_best_cold_and_never_below_the_floor():
    """Rows of validation NDCG@10 per share (the demo's shape: the overall falls with the share, the few cold
    examples rank the shares by chance): "room" takes the largest share within 2 % of the best overall, "cold"
    the best on the cold examples within it; `minimum` leaves out the smaller shares, and when none of the others
    is within the tolerance takes the smallest of them."""
    shares = COLD_SHARES  # 0, .05, .1, .15, .2, .3
    overall = np.array([0.1217, 0.1207, 0.1194, 0.1177, 0.1130, 0.1067])  # floor 0.98 x 0.1217 = 0.1193
    on_cold = np.array([0.02, 0.05, 0.04, 0.04, 0.08, 0.09])
    cold = np.zeros(60, bool)
    cold[:20] = True
    rows = np.empty((len(shares), 60))
    for g in range(len(shares)):  # the cold examples' mean on_cold[g], the whole row's mean overall[g]
        rows[g, cold] = on_cold[g]
        rows[g, ~cold] = (overall[g] * 60 - on_cold[g] * 20) / 40
    assert np.allclose(rows.mean(1), overall)
    assert shares[pick_cold_share(rows, cold, shares, "room", 0.0)] == 0.1
    assert shares[pick_cold_share(rows, cold, shares, "cold", 0.0)] == 0.05
    assert shares[pick_cold_share(rows, cold, shares, "room", 0.05)] == 0.1
    assert shares[pick_cold_share(rows, cold, shares, "cold", 0.1)] == 0.1
    assert shares[pick_cold_share(rows, cold, shares, "room", 0.15)] == 0.15  # none of 0.15.. within: the smallest
    assert shares[pick_cold_share(rows, cold, shares, "room", 0.5)] == 0.3  # above the grid: its largest
    flat = np.repeat(rows[:1], len(shares), axis=0)  # every share costs nothing: room takes the largest
    assert shares[pick_cold_share(flat, cold, shares, "room", 0.0)] == 0.3
    falling = rows.copy()
    falling[1:] *= 0.9  # every slot costs 10 %: none
    assert shares[pick_cold_share(falling, cold, shares, "room", 0.0)] == 0.0
    assert shares[pick_cold_share(falling, cold, shares, "cold", 0.0)] == 0.0


def test_training_chooses_the_share_by_the_configured_rule_and_never_below_the_floor():
    """A shop whose shoppers keep to its first products, new ones never picked: the slots cost little until a
    point, so "room" takes the largest share within the tolerance, "cold" (nothing to win on cold positives) the
    best overall, and `cold_share_min` gives new products a share anyway; the report lists the rows it saw."""
    _, vectors = launch_shop()
    rng = np.random.default_rng(3)
    customers = np.repeat(np.arange(60), 10)
    items = (customers % 4) + 4 * rng.integers(0, 10, len(customers))  # each shopper's cluster, its first 10 products
    times = rng.uniform(0, 16 * 24 * 3600.0, len(customers))
    shop = Interactions.from_arrays(customers, items, np.zeros(len(items), int), times, n_items=len(vectors))
    training = dataclasses.replace(CFG.training, epochs=1, batch_size=64)
    chosen = {}
    for name, change in (("room", {}), ("cold", {"cold_share_rule": "cold"}), ("floor", {"cold_share_min": 0.2})):
        model, report = train_tower(shop, vectors, CFG.tower, dataclasses.replace(training, **change), WEIGHTS, 72.0)
        assert float(model.cold_share) == pytest.approx(report.cold_share)
        chosen[name], rows = report.cold_share, {share: overall for share, overall, _ in report.cold_shares}
        within = [share for share, overall in rows.items() if overall >= 0.98 * max(rows.values())]
        if name == "room":
            assert chosen[name] == max(within)
        elif name == "cold":
            assert chosen[name] == max(within, key=lambda share: (rows[share], -share))  # nothing won on cold
        else:
            assert chosen[name] == max([s for s in within if s >= 0.2] or [0.2])
    assert chosen["cold"] < chosen["room"] < 0.2 <= chosen["floor"]
