"""The quality bench's yardsticks: ALS tuned on validation only, SASRec learning an order, the cold-start slice."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from appliance.baselines import PopularityScorer
from appliance.config import load_config
from appliance.errors import InvalidInput
from appliance.evaluation import evaluate, time_split
from appliance.interactions import Interactions
from web.bench import als, sasrec

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cfg():
    return load_config()


def cycles(n_items=40, n_customers=80, length=12, seed=0):
    """Every customer walks the catalog in one fixed order (item i, then i + 1 mod N) from a random start."""
    rng = np.random.default_rng(seed)
    start = rng.integers(n_items, size=n_customers)
    customer = np.repeat(np.arange(n_customers), length)
    item = (np.repeat(start, length) + np.tile(np.arange(length), n_customers)) % n_items
    ts = 1.7e9 + np.tile(np.arange(length) * 3600.0, n_customers) + customer
    return Interactions.from_arrays(customer, item, np.zeros_like(item), ts, n_items=n_items)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_sasrec_learns_what_comes_next(cfg, loss):
    inter = cycles()
    split = time_split(inter, 1)
    params = dataclasses.replace(sasrec.params_for("demo", loss), epochs=60, eval_steps=3, patience=3, dropout=0.1)
    scorer, report = sasrec.train_sasrec(split, 40, params, cfg.evaluation, seed=0)
    result = evaluate([scorer, PopularityScorer(split.train, 40, cfg.events.weights, np.inf)], split, 40,
                      cfg.evaluation)["models"]
    assert scorer.name == f"sasrec_{loss}"
    assert report.best_epoch > 0 and report.best_validation_ndcg == max(report.validation)
    assert result[scorer.name]["ndcg@10"] > 0.5 > 0.2 > result["popularity"]["ndcg@10"]


def test_sasrec_reads_only_events_before_the_moment(cfg):
    inter = cycles(n_customers=4)
    model = sasrec.SasRec(40, sasrec.params_for("demo", "ce"))
    scorer = sasrec.SasRecScorer(model, inter)
    customer = np.array([0])
    first = inter.ts[inter.customer == 0][3]
    before = scorer.scores(customer, np.array([first]))
    assert np.allclose(before, scorer.scores(customer, np.array([first - 1.0])))  # nothing changed in between
    assert not np.allclose(before, scorer.scores(customer, np.array([first + 1.0])))  # one more event read


def test_als_is_tuned_on_validation_and_never_sees_test(cfg, monkeypatch):
    inter = cycles(n_items=30, n_customers=60)
    split = time_split(inter, 1)
    seen = []
    fitted = als.AlsScorer.__init__

    def spy(self, train, *args, **kwargs):
        seen.append(len(train))
        fitted(self, train, *args, **kwargs)

    monkeypatch.setattr(als.AlsScorer, "__init__", spy)
    monkeypatch.setattr(als, "GRID", {"factors": (4, 16), "regularization": (0.1, 10.0), "alpha": (1.0, 4.0),
                                      "iterations": (5, 15), "weighting": ("events", "binary")})
    best, tried = als.tune_als(split, 30, cfg.events.weights, 0, cfg.evaluation)
    assert len(seen) == len(tried) <= als.ROUNDS * 10  # each point fitted once
    validation = als.validation_split(split, 1)
    assert set(seen) == {len(validation.train)} and len(validation.train) < len(split.train)
    assert dataclasses.asdict(best) | {"ndcg@10": max(t["ndcg@10"] for t in tried)} in tried  # the best point won


def test_an_earlier_runs_models_pair_with_the_tower_only_on_the_same_customers(cfg, tmp_path):
    from web.bench import quality

    inter = cycles()
    split = time_split(inter, 1)
    popularity = PopularityScorer(split.train, 40, cfg.events.weights, np.inf)
    tower = PopularityScorer(split.train, 40, cfg.events.weights, 24.0, name="tower")
    earlier = evaluate([popularity], split, 40, cfg.evaluation, per_customer=True)
    path = tmp_path / "quality_earlier.json"
    path.write_text(json.dumps({"evaluation": earlier, "cold_start": None}))
    stored = quality._stored_runs(str(path))
    assert set(stored["all"]) == {"popularity"} and stored["cold"] == {}
    _, versus = quality._slice([tower], split, 40, cfg, None, stored["all"])
    ours = evaluate([tower], split, 40, cfg.evaluation)["models"]["tower"]["ndcg@10"]
    assert versus["popularity"]["mean"] == pytest.approx(ours - earlier["models"]["popularity"]["ndcg@10"])
    stored["all"]["popularity"] = stored["all"]["popularity"][:-1]
    with pytest.raises(ValueError, match="not the same split"):
        quality._slice([tower], split, 40, cfg, None, stored["all"])


def test_the_live_prior_counts_other_customers_test_events_before_the_moment_only(cfg):
    from appliance.tower import UserTower
    from web.bench import quality

    # customer 0 buys 1 (history), then 2 at hour 10 (its test); customer 1 buys 1, then 3 at hour 20 (its test)
    inter = Interactions.from_arrays([0, 0, 1, 1], [1, 2, 1, 3], [0, 0, 0, 0],
                                     1.7e9 + 3600.0 * np.array([0.0, 10.0, 1.0, 20.0]), n_items=5)
    split = time_split(inter, 1)
    assert len(split.train) == 2 and len(split.test) == 2
    vectors = np.eye(5, 8, dtype=np.float32)
    tower, live, recent_live = quality.live_prior_scorers(UserTower(cfg.tower, 8), split.train, inter, vectors,
                                                          cfg, 100)
    assert (tower.name, live.name, recent_live.name) == ("tower_live_prior", "popularity_live",
                                                         "popularity_recent_live")
    moment = np.array([inter.ts[3]])  # customer 1's test moment
    train_only = PopularityScorer(split.train, 5, cfg.events.weights, np.inf).scores(np.array([1]), moment)
    seen = live.scores(np.array([1]), moment)[0]
    assert train_only[0][2] == 0 < seen[2]  # customer 0's test purchase, before the moment, counts live only
    assert seen[3] == 0  # customer 1's own test purchase (at the moment) never does
    assert seen[1] == pytest.approx(train_only[0][1])  # training events count as before
    assert live.scores(np.array([0]), np.array([inter.ts[1]]))[0][2] == 0  # nor customer 0's own, at its moment
    with pytest.raises(InvalidInput, match="live-prior"):
        quality.live_prior_scorers(UserTower(cfg.tower, 8), split.train, inter, vectors,
                                   dataclasses.replace(cfg, training=dataclasses.replace(cfg.training,
                                                                                         prior_as_of="end")), 100)
