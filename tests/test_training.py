"""Training: examples without leakage, tiny data, determinism, every kind of negatives, never worse than init."""

import dataclasses

import numpy as np
import pytest
import torch

from appliance.config import load_config
from appliance.errors import InvalidInput
from appliance.interactions import Interactions, history_inputs
from appliance.tower import mean_vector, user_vectors
from appliance.training import make_examples, train_tower

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
    return cfg.tower, dataclasses.replace(cfg.training, epochs=2, batch_size=64), cfg.events.weights


def test_examples_use_only_earlier_events_of_the_same_customer():
    inter, _ = small_shop()
    ex = make_examples(inter, history=20)
    assert len(ex.target) > 0
    rows = np.where(ex.mask, ex.rows, ex.target[:, None] - 1)
    assert (rows < ex.target[:, None]).all()
    assert (inter.customer[rows] == inter.customer[ex.target][:, None]).all()
    assert (inter.ts[rows] <= inter.ts[ex.target][:, None]).all()
    assert ex.mask.any(1).all()  # every example has some history


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
    assert report.epochs == training.epochs and report.best_epoch == training.epochs
    _, report = train_tower(inter, vectors, tower, training, weights)  # the customer's last example validates
    assert report.examples == 1 and report.validation_examples == 1 and len(report.validation) == 1 + report.epochs


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
    assert len(steps) == 3 * steps[0]["steps"] and sum("done" in e for e in events) == 3


def test_early_stopping_keeps_the_best_epoch_including_the_initial_tower(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=2)
    _, report = train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=6, patience=1), weights)
    assert len(report.validation) == 1 + report.epochs  # [initial tower, epoch 1, ...]
    assert report.best_validation_ndcg == max(report.validation) >= report.validation[0]
    assert report.best_epoch == int(np.argmax(report.validation))
    assert report.epochs <= 6


def test_a_harmful_training_run_keeps_the_initial_tower(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=5)
    harmful = dataclasses.replace(training, epochs=2, patience=2, learning_rate=1.0, scalar_learning_rate=3.0)
    model, report = train_tower(inter, vectors, tower, harmful, weights)
    assert max(report.validation[1:]) < report.validation[0] and report.best_epoch == 0
    init, _ = train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=0), weights)
    for name, tensor in init.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
