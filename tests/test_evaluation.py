"""Evaluation: the split leaks nothing, metrics match hand computation, baselines, the honest comparison."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from appliance.baselines import (
    CooccurrenceScorer,
    PopularityScorer,
    RecentPopularityScorer,
    TowerScorer,
    baseline_scorers,
    popularity_scores,
    prior_popularity,
)
from appliance.config import load_config
from appliance.evaluation import (
    cold_items,
    evaluate,
    format_table,
    paired_difference,
    ranking_metrics,
    should_promote,
    time_split,
)
from appliance.evaluation import (
    test_targets as targets_of,
)
from appliance.examples import MomentPrior, make_examples
from appliance.interactions import Interactions
from appliance.training import train_tower
from appliance.types import EVENT_NAMES

torch.set_num_threads(2)


def shop(seed=0, n_items=300, n_clusters=6, n_customers=150, dim=384):
    """Random unit vectors in clusters; each customer browses mostly its hidden cluster, favouring its hits."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    cluster = rng.integers(n_clusters, size=n_items)
    noise = rng.normal(size=(n_items, dim))
    vectors = centers[cluster] + 0.9 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    appeal = rng.pareto(1.2, size=n_items) + 1.0
    counts = rng.integers(15, 30, size=n_customers)
    customer = np.repeat(np.arange(n_customers), counts)
    taste = rng.integers(n_clusters, size=n_customers)[customer]
    in_taste = rng.random(len(customer)) < 0.85
    p = appeal * (np.where(in_taste[:, None], cluster[None, :] == taste[:, None], 1.0))  # (E, N)
    cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
    item = np.minimum((cdf < rng.random((len(customer), 1))).sum(1), n_items - 1)
    ts = 1.7e9 + rng.uniform(0, 7 * 86400, size=len(customer))
    kind = rng.choice(6, p=[0.6, 0.25, 0.07, 0.04, 0.02, 0.02], size=len(customer))
    return Interactions.from_arrays(customer, item, kind, ts, n_items=n_items), vectors


@pytest.fixture(scope="module")
def cfg():
    return load_config()


def test_split_has_no_leakage():
    inter, _ = shop(n_customers=40)
    # add ties with a customer's last event and a customer with a single event
    inter = Interactions.from_arrays(
        np.r_[inter.customer, 0, 999], np.r_[inter.item, 3, 4], np.r_[inter.kind, 0, 0],
        np.r_[inter.ts, inter.ts[inter.customer == 0].max(), 1.7e9],
    )
    split = time_split(inter, holdout=1)
    assert len(split.train) + len(split.test) == len(inter)
    for c in np.unique(split.test.customer):
        assert split.test.ts[split.test.customer == c].min() > split.train.ts[split.train.customer == c].max()
    assert (split.test.customer == 0).sum() == 2  # the tie went to test, not history
    assert 999 in split.train.customer and 999 not in split.test.customer
    two = time_split(inter, holdout=2)
    assert (two.test.customer == 5).sum() == 2


def test_the_test_item_is_the_last_new_product_and_later_revisits_stay_out_of_history():
    # customer 1: products 0, 1, 2, then revisits 1 and 0; customer 2: only one product, twice
    inter = Interactions.from_arrays(
        [1, 1, 1, 1, 1, 2, 2], [0, 1, 2, 1, 0, 5, 5], [0, 0, 0, 1, 2, 0, 1], [0, 10, 20, 30, 40, 0, 10]
    )
    split = time_split(inter, holdout=1)
    assert split.train.item[split.train.customer == 1].tolist() == [0, 1]
    assert split.test.item[split.test.customer == 1].tolist() == [2, 1, 0]  # revisits after the cut are test
    assert 2 not in split.test.customer  # nothing new after its first event: no test
    two = time_split(inter, holdout=2)
    assert two.train.item[two.train.customer == 1].tolist() == [0]


def test_metrics_of_a_hand_computed_ranking():
    scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.0]])
    m = ranking_metrics(scores, np.array([[2]]), np.array([[True]]), ks=(2, 3, 10))
    assert m["ndcg@10"][0] == pytest.approx(1 / math.log2(4))  # hit at rank 3
    assert m["hr@2"][0] == 0 and m["hr@3"][0] == 1 and m["recall@3"][0] == 1
    assert m["mrr"][0] == pytest.approx(1 / 3)
    # two relevant items at ranks 1 and 4
    m = ranking_metrics(scores, np.array([[0, 3]]), np.array([[True, True]]), ks=(3, 10))
    assert m["recall@3"][0] == 0.5
    assert m["ndcg@10"][0] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert m["mrr"][0] == 1.0


def test_nan_scores_rank_last_and_never_score_above_one():
    diverged = np.full((1, 5), np.nan)
    m = ranking_metrics(diverged, np.array([[2]]), np.array([[True]]), ks=(10,))
    assert m["ndcg@10"][0] <= 1.0 and m["mrr"][0] <= 1.0
    partly = np.array([[0.5, np.nan, 0.1]])
    assert ranking_metrics(partly, np.array([[1]]), np.array([[True]]), ks=(10,))["mrr"][0] == pytest.approx(1 / 3)


def test_ties_are_neutral_and_excluded_items_do_not_count():
    flat = np.zeros((1, 11))
    m = ranking_metrics(flat, np.array([[4]]), np.array([[True]]), ks=(10,))
    assert m["mrr"][0] == pytest.approx(1 / 6)  # 10 others tied: half of them above
    excluded = np.array([[np.inf, 0.5, 0.2]])
    excluded[0, 0] = -np.inf
    assert ranking_metrics(excluded, np.array([[2]]), np.array([[True]]), ks=(10,))["mrr"][0] == 0.5


class Oracle:
    """Scores seen items highest (they must be removed), then the test item."""

    name = "oracle"

    def __init__(self, split, n_items):
        self.split, self.n_items = split, n_items

    def scores(self, customers, at):
        out = np.zeros((len(customers), self.n_items))
        for row, c in enumerate(customers):
            out[row, self.split.train.item[self.split.train.customer == c]] = 10.0
            out[row, self.split.test.item[self.split.test.customer == c]] = 5.0
        return out


def test_seen_items_are_excluded_from_the_ranking(cfg):
    inter, vectors = shop(n_customers=30)
    split = time_split(inter, 1)
    result = evaluate([Oracle(split, len(vectors))], split, len(vectors), cfg.evaluation, chunk=7)
    assert result["models"]["oracle"]["ndcg@10"] == pytest.approx(1.0)
    assert result["customers"] <= 30


def test_baselines_on_hand_made_data(cfg):
    # customer 1: {0, 1}; customer 2: {1, 2}; customer 3: {0, 2, 3}; customer 4 asks with history {1}
    inter = Interactions.from_arrays(
        [1, 1, 2, 2, 3, 3, 3, 4], [0, 1, 1, 2, 0, 2, 3, 1], [0] * 8, [0, 3600, 0, 3600, 0, 3600, 7200, 0]
    )
    co = CooccurrenceScorer(inter, 5).scores(np.array([4]), np.array([1e9]))
    assert co[0].tolist() == [1.0, 3.0, 1.0, 0.0, 0.0]  # via customers 1 and 2 (and itself for item 1)
    pop = PopularityScorer(inter, 5, cfg.events.weights, half_life_hours=1.0).scores(np.array([4, 5]), None)
    assert pop.shape == (2, 5) and pop[0, 3] == pytest.approx(0.1)  # the newest event: weight 0.1, no decay
    assert pop[0, 0] == pytest.approx(0.1 * 0.25 * 2)  # two events 2 hours before the newest
    assert pop[0, 2] == pytest.approx(0.1 * 0.5 * 2)  # two events 1 hour before it
    assert pop[0, 4] == 0
    all_time = PopularityScorer(inter, 5, cfg.events.weights, half_life_hours=math.inf).scores(np.array([4]), None)
    assert all_time[0].tolist() == pytest.approx([0.2, 0.3, 0.2, 0.1, 0.0])  # every event counts 0.1 (a view)


def test_recent_popularity_is_as_of_each_customers_moment(cfg):
    # product 0 viewed at hours 0 and 2, product 1 bought at hour 3, product 2 viewed at hour 5
    hour = 3600.0
    inter = Interactions.from_arrays([1, 2, 3, 4], [0, 0, 1, 2], [0, 0, 5, 0], [0, 2 * hour, 3 * hour, 5 * hour])
    scorer = RecentPopularityScorer(inter, 4, cfg.events.weights, half_life_hours=1.0)
    early, late = scorer.scores(np.array([9, 9]), np.array([3 * hour, 6 * hour]))
    assert early.tolist() == pytest.approx([0.1 * 2 ** -3 + 0.1 * 2 ** -1, 0.0, 0.0, 0.0])  # nothing at or after 3 h
    assert late.tolist() == pytest.approx([0.1 * 2 ** -6 + 0.1 * 2 ** -4, 8.0 * 2 ** -3, 0.1 * 2 ** -1, 0.0])


@pytest.mark.parametrize("half_life", [5.0, 720.0, math.inf])
def test_recent_popularity_snapshots_match_the_direct_sum(cfg, half_life):
    rng = np.random.default_rng(3)
    inter = Interactions.from_arrays(rng.integers(40, size=3000), rng.integers(50, size=3000),
                                     rng.integers(6, size=3000), rng.uniform(0, 3e7, size=3000))
    scorer = RecentPopularityScorer(inter, 50, cfg.events.weights, half_life)
    assert len(scorer.moments) > 100  # the snapshots are used, not only the direct sum
    at = rng.uniform(-1e6, 3.1e7, size=25)
    kind_weight = np.array([cfg.events.weights[n] for n in EVENT_NAMES])
    before = inter.ts[None, :] < at[:, None]  # (C, E)
    age_hours = np.where(before, at[:, None] - inter.ts, 0.0) / 3600.0
    w = np.where(before, kind_weight[inter.kind] * np.exp2(-age_hours / half_life), 0.0)
    direct = np.stack([np.bincount(inter.item, row, 50) for row in w])
    assert np.allclose(scorer.scores(np.zeros(25, dtype=np.int64), at), direct, rtol=1e-5, atol=1e-9)


def test_the_moment_prior_is_popularity_as_of_each_examples_time(cfg):
    inter, _ = shop(n_customers=20)
    examples = make_examples(inter, cfg.tower.history)
    rows = MomentPrior(inter, 300, cfg.events.weights, 24.0).rows(examples.take(np.arange(5)))
    recent = RecentPopularityScorer(inter, 300, cfg.events.weights, 24.0)
    for i, target in enumerate(examples.target[:5]):
        expected = np.log1p(recent.scores(inter.customer[[target]], inter.ts[[target]]))[0]
        assert rows[i].numpy() == pytest.approx(expected, rel=1e-5)
        assert rows[i, inter.item[target]] < np.log1p(popularity_scores(inter, 300, cfg.events.weights, 24.0,
                                                                        now=inter.ts[target] + 1))[inter.item[target]]


def test_the_cold_slice_keeps_only_new_products_as_relevant(cfg):
    # product 3 has no event before the split: only customer 2's test item is cold
    inter = Interactions.from_arrays([1, 1, 1, 2, 2, 2], [0, 1, 2, 1, 2, 3], [0] * 6, [0, 1, 2, 0, 1, 2])
    split = time_split(inter, 1)
    cold = cold_items(split, 5)
    assert cold.tolist() == [False, False, False, True, True]
    customers, _, relevant, _ = targets_of(split, 5, cold)
    assert customers.tolist() == [2] and relevant.tolist() == [[3]]
    result = evaluate([PopularityScorer(split.train, 5, cfg.events.weights, math.inf)], split, 5, cfg.evaluation,
                      items=cold)
    assert result["customers"] == 1
    assert result["models"]["popularity"]["ndcg@10"] == pytest.approx(1 / math.log2(2 + 1))  # tied with item 4


@pytest.fixture(scope="module")
def comparison(cfg):
    inter, vectors = shop(seed=0)
    split = time_split(inter, cfg.evaluation.holdout)
    training = dataclasses.replace(cfg.training, epochs=6)
    model, report = train_tower(
        split.train, vectors, cfg.tower, training, cfg.events.weights, cfg.feed.popularity_half_life_hours
    )
    scorers = baseline_scorers(
        split.train, vectors, cfg.events.weights, cfg.tower.history, cfg.tower.recency_half_life_hours,
        cfg.feed.popularity_half_life_hours,
    )
    popularity = popularity_scores(split.train, len(vectors), cfg.events.weights, cfg.feed.popularity_half_life_hours)
    scorers.append(TowerScorer(model, split.train, vectors, popularity))
    return evaluate(scorers, split, len(vectors), cfg.evaluation), report


def test_trained_tower_beats_popularity(comparison):
    result, report = comparison
    models = result["models"]
    print(format_table(result), report)
    assert models["tower"]["ndcg@10"] > models["popularity"]["ndcg@10"]
    assert models["tower"]["ndcg@10"] > models["mean_vector"]["ndcg@10"]
    assert should_promote(models["tower"], None, models["popularity"])


def test_the_tower_learns_that_popular_products_are_likelier(comparison):
    _, report = comparison
    assert report.popularity_weight > 0  # the shop's products have skewed appeal: the prior helps, so it is learned


def test_evaluate_returns_a_json_table(comparison, cfg):
    result, _ = comparison
    assert json.loads(json.dumps(result)) == result
    assert set(result["models"]) == {"popularity", "popularity_recent", "cooccurrence", "mean_vector", "tower"}
    row = result["models"]["tower"]
    for k in cfg.evaluation.ks:
        assert {f"recall@{k}", f"hr@{k}", f"ndcg@{k}"} <= set(row)
        assert 0.0 <= row[f"ndcg@{k}"] <= row[f"hr@{k}"] <= 1.0
    assert 0 < row["mrr"] <= 1 and 0 < row["coverage@10"] <= 1
    # one list for everyone covers less of the catalog than personal lists
    assert result["models"]["popularity"]["coverage@10"] < result["models"]["mean_vector"]["coverage@10"]
    table = format_table(result)
    assert "tower" in table and "ndcg@10" in table


def test_a_paired_difference_is_significant_only_when_one_side_wins_consistently():
    rng = np.random.default_rng(1)
    base = rng.random(300)
    better = paired_difference(base + 0.05, base)
    assert better["mean"] == pytest.approx(0.05) and better["low"] == pytest.approx(0.05) and better["p"] == 0.0
    noise = paired_difference(base + rng.normal(0, 0.2, 300), base)
    assert noise["low"] < 0 < noise["high"] and noise["p"] > 0.05


def test_evaluate_can_return_each_customers_ndcg(cfg):
    inter, vectors = shop(n_customers=30)
    split = time_split(inter, 1)
    result = evaluate([Oracle(split, len(vectors))], split, len(vectors), cfg.evaluation, per_customer=True)
    assert result["per_customer"]["oracle"] == [1.0] * result["customers"]


@pytest.mark.parametrize(
    ("candidate", "serving", "popularity", "expected"),
    [
        (0.30, None, 0.20, True),
        (0.30, 0.25, 0.20, True),
        (0.30, 0.30, 0.20, False),  # a tie does not replace the serving model
        (0.30, 0.35, 0.20, False),
        (0.15, None, 0.20, False),  # must beat popularity even with nothing serving
        (0.30, 0.10, 0.30, False),
    ],
)
def test_promotion_rule(candidate, serving, popularity, expected):
    serving = None if serving is None else {"ndcg@10": serving}
    assert should_promote({"ndcg@10": candidate}, serving, {"ndcg@10": popularity}) is expected


def test_a_tower_trained_with_the_moment_prior_learns_to_use_it(cfg):
    inter, vectors = shop(seed=1, n_customers=80)
    split = time_split(inter, cfg.evaluation.holdout)
    training = dataclasses.replace(cfg.training, epochs=2, prior_as_of="moment", prior_half_life_hours=720.0)
    model, report = train_tower(split.train, vectors, cfg.tower, training, cfg.events.weights, 720.0)
    assert report.popularity_weight > 0
    popularity = prior_popularity(split.train, len(vectors), cfg.events.weights, "moment", 720.0)
    assert isinstance(popularity, RecentPopularityScorer)
    tower = TowerScorer(model, split.train, vectors, popularity, cold_share=0.0)  # the score, without cold slots
    customers, at = np.unique(split.test.customer)[:3], np.full(3, split.train.ts.max())
    cosine_only = TowerScorer(model, split.train, vectors, np.zeros(len(vectors)), cold_share=0.0)
    extra = tower.scores(customers, at) - cosine_only.scores(customers, at)  # (3, N): the prior alone
    expected = report.popularity_weight * np.log1p(popularity.scores(customers, at))
    assert extra == pytest.approx(expected, abs=1e-5)
