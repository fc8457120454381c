"""Training: examples without leakage, tiny data, determinism, every kind of negatives, never worse than init;
the first phase at its own temperature, the network phase's patience only once measurably below the best."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import appliance.training
from appliance.config import load_config
from appliance.errors import InvalidInput
from appliance.examples import Examples, PopularityPrior, make_examples
from appliance.interactions import Interactions, history_inputs
from appliance.schedule import within_noise
from appliance.tower import mean_vector, user_vectors
from appliance.training import train_tower

torch.set_num_threads(2)


def small_shop(seed=0, n_items=120, n_customers=40, dim=384):
    """Products in 4 clusters of random unit vectors; each customer browses mostly one cluster over a week."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, dim))
    cluster = rng.integers(4, size=n_items)
    vectors = centers[cluster] / np.sqrt(dim) * 2 + rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    counts = rng.integers(5, 15, size=n_customers)
    customer = np.repeat(np.arange(n_customers), counts)
    taste = rng.integers(4, size=n_customers)[customer]
    own = np.array([rng.choice(np.flatnonzero(cluster == t)) for t in taste])
    item = np.where(rng.random(len(customer)) < 0.85, own, rng.integers(n_items, size=len(customer)))
    ts = 1.7e9 + rng.uniform(0, 7 * 86400, size=len(customer))
    kind = rng.choice(6, p=[0.6, 0.25, 0.07, 0.04, 0.02, 0.02], size=len(customer))
    return Interactions.from_arrays(customer, item, kind, ts, n_items=n_items), vectors


@pytest.fixture(scope="module")
def config():
    cfg = load_config()
    # min_network_steps 0: these tests pin the recipe's epochs and steps (the small-shop plan: test_training_speed)
    training = dataclasses.replace(cfg.training, epochs=2, batch_size=64, scalar_batch_size=64, min_network_steps=0)
    return cfg.tower, training, cfg.events.weights


def test_examples_use_only_earlier_events_of_the_same_customer():
    inter, _ = small_shop()
    ex = make_examples(inter, history=20)
    assert len(ex.target) > 0
    rows = np.where(ex.mask, ex.rows, ex.target[:, None] - 1)
    assert (rows < ex.target[:, None]).all()
    assert (inter.customer[rows] == inter.customer[ex.target][:, None]).all()
    assert (inter.ts[rows] < inter.ts[ex.target][:, None]).all()
    assert ex.mask.any(1).all()  # every example has some history


def test_a_basket_bought_at_one_moment_never_shows_its_own_items():
    # customer 1: views 0, then buys 1, 2 and 3 in one basket (same timestamp), then views 4
    inter = Interactions.from_arrays([1] * 5, [0, 1, 2, 3, 4], [0, 5, 5, 5, 0], [10.0, 20.0, 20.0, 20.0, 30.0])
    ex = make_examples(inter, history=20)
    histories = {int(inter.item[t]): inter.item[r[m]].tolist()
                 for t, r, m in zip(ex.target, ex.rows, ex.mask, strict=True)}
    assert histories == {1: [0], 2: [0], 3: [0], 4: [0, 1, 2, 3]}


def test_first_event_and_repeats_are_not_positives():
    inter = Interactions.from_arrays([1, 1, 1, 2], [5, 5, 6, 7], [0, 0, 0, 0], [10.0, 20.0, 30.0, 5.0])
    ex = make_examples(inter, history=20)
    assert inter.item[ex.target].tolist() == [6]  # customer 2 (one event) yields nothing; item 5 repeats
    assert ex.mask[0].sum() == 2


def test_zero_examples_is_a_clear_error(config):
    tower, training, weights = config
    inter = Interactions.from_arrays([1, 2], [0, 1], [0, 0], [1.0, 2.0])
    with pytest.raises(InvalidInput, match="no training examples"):
        train_tower(inter, np.eye(4, dtype=np.float32), tower, training, weights)


def test_tiny_data_trains(config):
    tower, training, weights = config
    inter = Interactions.from_arrays([1, 1, 1], [0, 1, 2], [0, 1, 5], [1.0, 2.0, 3.0])
    vectors = np.eye(8, 384, dtype=np.float32)
    model, report = train_tower(inter, vectors, tower, dataclasses.replace(training, validation_fraction=0.0), weights)
    assert report.examples == 2 and report.validation_examples == 0 and report.best_validation_ndcg is None
    # two phases (scalars, then the network) of `epochs` each; without validation the last epoch is kept
    assert report.epochs == 2 * training.epochs == report.best_epoch and report.scalar_epochs == training.epochs
    _, report = train_tower(inter, vectors, tower, training, weights)  # the customer's last example validates
    assert report.examples == 1 and report.validation_examples == 1
    # the initial tower, every epoch of the first phase, every `validate_every`-th of the network's and its last
    network = range(report.scalar_epochs + 1, report.epochs + 1)
    expected = [0, *range(1, report.scalar_epochs + 1),
                *(e for e in network if (e - report.scalar_epochs) % training.validate_every == 0 or e == network[-1])]
    assert report.validated_epochs == expected and len(report.validation) == len(expected)


def test_the_untrained_tower_is_mean_vector_with_the_event_weights(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=3)
    model, report = train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=0), weights)
    assert report.best_epoch == 0 and report.epochs == 0 and len(report.validation) == 1
    customers = np.unique(inter.customer)
    batch = history_inputs(inter, vectors, customers, np.full(len(customers), 1.8e9), tower.history)
    expected = mean_vector(*batch, weights, tower.recency_half_life_hours)
    np.testing.assert_allclose(user_vectors(model, *batch), expected, atol=1e-4)


def test_training_restores_the_thread_count(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=4)
    before = torch.get_num_threads()
    train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=1, threads=1), weights)
    assert torch.get_num_threads() == before


def test_same_seed_same_model_different_seed_different_model(config):
    tower, training, weights = config
    inter, vectors = small_shop()
    first, report = train_tower(inter, vectors, tower, training, weights)
    second, _ = train_tower(inter, vectors, tower, training, weights)
    third, _ = train_tower(inter, vectors, tower, dataclasses.replace(training, seed=99), weights)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert any(not torch.equal(t, third.state_dict()[n]) for n, t in first.state_dict().items())
    assert report.examples > 0 and report.validation_examples > 0 and report.train_seconds > 0
    assert report.best_validation_ndcg is not None and 0.0 <= report.best_validation_ndcg <= 1.0


@pytest.mark.parametrize(
    ("negatives", "weighted"), [("full", False), ("sampled", True), ("in_batch", False), ("mixed", True)]
)
def test_every_kind_of_negatives_lowers_the_loss(config, negatives, weighted):
    tower, training, weights = config
    inter, vectors = small_shop(seed=1)
    training = dataclasses.replace(training, negatives=negatives, event_weighted_loss=weighted, epochs=3, patience=9)
    events = []
    _, report = train_tower(inter, vectors, tower, training, weights, progress=events.append)
    assert all(np.isfinite(report.losses))
    assert report.losses[-1] < report.losses[0]
    steps = [e for e in events if "step" in e]
    assert len(steps) == 6 * steps[0]["steps"] and sum("done" in e for e in events) == 6  # 2 phases of 3


def test_early_stopping_keeps_the_best_epoch_including_the_initial_tower(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=2)
    # keep_within 0: the best epoch itself (the latest within noise of it is tested in test_training_speed.py)
    _, report = train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=6, patience=1,
                                                                      validate_every=1, keep_within=0.0), weights)
    assert report.validated_epochs == list(range(report.epochs + 1))  # [initial tower, epoch 1, ...]
    assert report.best_validation_ndcg == max(report.validation) >= report.validation[0]
    assert report.best_epoch == int(np.argmax(report.validation))
    assert report.scalar_epochs <= 6 and report.epochs - report.scalar_epochs <= 6


def test_a_harmful_training_run_keeps_the_initial_tower(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=5)
    # rates this large make both phases diverge (NaN vectors, which must rank nothing rather than score inf)
    harmful = dataclasses.replace(training, epochs=2, patience=2, learning_rate=10.0, scalar_learning_rate=300.0)
    model, report = train_tower(inter, vectors, tower, harmful, weights)
    assert max(report.validation[1:]) < report.validation[0] and report.best_epoch == 0
    init, _ = train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=0), weights)
    for name, tensor in init.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_the_popularity_prior_of_an_example_leaves_out_its_own_customer(config):
    _, _, weights = config
    # product 5 only ever seen by customer 1 (whose example's positive it is); product 6 by both customers
    inter = Interactions.from_arrays([1, 1, 1, 2], [6, 5, 6, 6], [0, 0, 0, 0], [0.0, 3600.0, 3600.0, 3600.0])
    prior = PopularityPrior(inter, 8, weights, half_life_hours=1.0)
    rows = prior.rows(Examples(np.zeros((2, 1), int), np.ones((2, 1), bool), np.array([1, 3]))).numpy()
    view = weights["product_viewed"]
    assert rows[0, 5] == 0.0  # customer 1 cannot see its own positive's popularity
    assert rows[0, 6] == pytest.approx(np.log1p(view))  # only customer 2's view of 6
    assert rows[1, 5] == pytest.approx(np.log1p(view))  # customer 2 sees customer 1's event on 5
    assert rows[1, 6] == pytest.approx(np.log1p(view * 1.5))  # customer 1's two events, one an hour older
    assert (rows[:, 7] == 0).all()


def test_without_the_feeds_popularity_the_prior_stays_off(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=6)
    off, _ = train_tower(inter, vectors, tower, training, weights)
    assert off.popularity_weight.item() == 0.0
    disabled = dataclasses.replace(training, popularity_prior=False)
    assert train_tower(inter, vectors, tower, disabled, weights, 72.0)[0].popularity_weight.item() == 0.0


def test_the_shipped_first_phase_is_sharper_than_the_network_phase():
    training = load_config().training
    assert training.scalar_temperature < training.temperature


def test_the_first_phase_learns_at_the_scalar_temperature_the_network_at_the_temperature(config, monkeypatch):
    tower, training, weights = config
    inter, vectors = small_shop(seed=3)
    seen = []  # the temperature of every step's loss, in order

    def recording(*args, **kwargs):
        seen.append(args[5].temperature)  # contrastive_loss(user, target, weight, item_vectors, log_q, config, ...)
        return real(*args, **kwargs)

    real = appliance.training.contrastive_loss
    monkeypatch.setattr(appliance.training, "contrastive_loss", recording)
    recipe = dataclasses.replace(training, temperature=0.05, scalar_temperature=0.02)
    _, report = train_tower(inter, vectors, tower, recipe, weights, 24.0)
    per_epoch = math.ceil(min(report.examples, recipe.epoch_examples) / recipe.scalar_batch_size)
    first = report.scalar_epochs * per_epoch
    assert report.epochs > report.scalar_epochs > 0  # both phases ran
    assert seen[:first] == [0.02] * first and set(seen[first:]) == {0.05}


def test_the_network_phase_stops_on_patience_only_once_measurably_below_the_best(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=2)
    recipe = dataclasses.replace(training, epochs=6, patience=3, scalar_examples=10**9)
    _, strict = train_tower(inter, vectors, tower, dataclasses.replace(recipe, patience_within=0.0), weights, 24.0)
    assert strict.best_epoch < strict.scalar_epochs  # a first-phase best the network phase never passes ...
    assert strict.epochs == strict.best_epoch + recipe.patience < strict.scalar_epochs + recipe.epochs  # ... stops
    _, level = train_tower(inter, vectors, tower, dataclasses.replace(recipe, patience_within=100.0), weights, 24.0)
    assert level.epochs == level.scalar_epochs + recipe.epochs  # always "level with the best": the whole plan


def test_within_noise_is_one_sided_and_scaled_by_the_paired_standard_error():
    rng = np.random.default_rng(0)
    best = rng.random(400) * (rng.random(400) < 0.2)
    assert within_noise(best + 0.01, best, 1.0)  # above the best
    slightly = best - np.r_[np.full(20, 0.05), np.zeros(380)]  # mean -0.0025: 4.6 standard errors below
    assert within_noise(slightly, best, 5.0) and not within_noise(slightly, best, 4.0)
    assert not within_noise(best * 0.5, best, 1.0)
