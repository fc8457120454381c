"""The user tower and the mean-vector fallback: shapes, unit norm, masking, recency, determinism."""

import dataclasses

import numpy as np
import pytest
import torch

from appliance.config import load_config
from appliance.tower import UserTower, mean_vector, pad_histories, user_vectors
from appliance.types import EVENT_NAMES

torch.set_num_threads(2)
D = 384


@pytest.fixture(scope="module")
def tower_config():
    return load_config().tower


def random_batch(seed, b=4, t=20, valid=(3, 20, 1, 7)):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(b, t, D)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    kinds = rng.integers(6, size=(b, t))
    ages = np.sort(rng.uniform(0, 200, size=(b, t)))[:, ::-1].astype(np.float32).copy()  # oldest first
    mask = np.arange(t)[None, :] >= t - np.array(valid)[:, None]  # left-padded
    return vectors, kinds, ages, mask


def trained_a_little(config, seed=0):
    """A tower whose output projection is no longer zero, so attention paths matter."""
    torch.manual_seed(seed)
    model = UserTower(config, D)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_output_is_unit_length_with_right_shape(tower_config):
    out = user_vectors(trained_a_little(tower_config), *random_batch(0))
    assert out.shape == (4, D)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("layers", [0, 1])
def test_padding_does_not_change_the_output(tower_config, layers):
    model = trained_a_little(dataclasses.replace(tower_config, layers=layers))
    vectors, kinds, ages, mask = random_batch(1)
    before = user_vectors(model, vectors, kinds, ages, mask)
    garbage = random_batch(2)
    vectors2 = np.where(mask[..., None], vectors, 7.0 * garbage[0])
    kinds2 = np.where(mask, kinds, garbage[1])
    ages2 = np.where(mask, ages, 1000.0 * garbage[2])
    np.testing.assert_allclose(user_vectors(model, vectors2, kinds2, ages2, mask), before, atol=1e-5)
    # and the same row alone with a shorter padded length
    short = user_vectors(model, vectors[:1, -5:], kinds[:1, -5:], ages[:1, -5:], mask[:1, -5:])
    np.testing.assert_allclose(short, before[:1], atol=1e-5)


def test_row_without_history_gives_zeros(tower_config):
    vectors, kinds, ages, mask = random_batch(3)
    mask[2] = False
    out = user_vectors(trained_a_little(tower_config), vectors, kinds, ages, mask)
    assert np.all(out[2] == 0) and np.all(np.isfinite(out))


def test_untrained_tower_is_the_recency_weighted_mean(tower_config):
    model = UserTower(tower_config, D).eval()
    batch = random_batch(4)
    ones = {name: 1.0 for name in load_config().events.weights}
    expected = mean_vector(*batch, ones, tower_config.recency_half_life_hours)
    np.testing.assert_allclose(user_vectors(model, *batch), expected, atol=1e-4)


def test_the_text_side_is_the_residual_mean_with_the_learned_scalars_whatever_the_attention_learned(tower_config):
    model = trained_a_little(tower_config)  # attention branch and recency/kind scalars all moved
    batch = random_batch(6)
    weights = dict(zip(EVENT_NAMES, model.kind_bias.exp().tolist(), strict=True))
    expected = mean_vector(*batch, weights, model.log_half_life.exp().item())
    np.testing.assert_allclose(user_vectors(model, *batch, attention=False), expected, atol=1e-4)
    assert np.abs(user_vectors(model, *batch) - expected).max() > 1e-2  # the full tower is not the text side


def test_recency_decay_is_learnable_and_newer_weigh_more(tower_config):
    model = UserTower(tower_config, D)
    assert model.log_half_life.requires_grad
    assert np.isclose(model.log_half_life.exp().item(), tower_config.recency_half_life_hours)
    a, b = np.eye(D, dtype=np.float32)[:2]
    vectors = np.stack([a, b])[None]  # (1, 2, D): a is old, b is new
    out = user_vectors(model.eval(), vectors, np.zeros((1, 2), int), np.array([[100.0, 1.0]]), np.ones((1, 2), bool))
    assert out[0] @ b > out[0] @ a


def test_same_seed_same_tower(tower_config):
    batch = random_batch(5)
    torch.manual_seed(3)
    first = user_vectors(UserTower(tower_config, D), *batch)
    torch.manual_seed(3)
    second = user_vectors(UserTower(tower_config, D), *batch)
    np.testing.assert_array_equal(first, second)


def test_heads_must_divide_width(tower_config):
    with pytest.raises(ValueError):
        UserTower(dataclasses.replace(tower_config, width=130, heads=4), D)


def test_mean_vector_weighs_events_and_recency():
    weights = dict(load_config().events.weights)
    a, b = np.eye(D, dtype=np.float32)[:2]
    vectors = np.stack([a, b])[None]
    mask = np.ones((1, 2), bool)
    # same age: a purchase outweighs a view
    out = mean_vector(vectors, np.array([[0, 5]]), np.zeros((1, 2)), mask, weights, 24.0)
    assert out[0] @ b > out[0] @ a
    # same kind: the newer one weighs more, and a 10-year-old history still gives a unit vector
    out = mean_vector(vectors, np.zeros((1, 2), int), np.array([[87600.0, 87500.0]]), mask, weights, 24.0)
    assert out[0] @ b > out[0] @ a
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    empty = mean_vector(vectors, np.zeros((1, 2), int), np.zeros((1, 2)), ~mask, weights, 24.0)
    assert np.all(empty == 0)


def test_pad_histories_keeps_the_most_recent():
    rng = np.random.default_rng(0)
    long = (rng.normal(size=(25, D)), np.arange(25) % 6, np.arange(25, 0, -1.0))
    short = (rng.normal(size=(2, D)), np.array([1, 2]), np.array([5.0, 1.0]))
    vectors, kinds, ages, mask = pad_histories([long, short], 20, D)
    assert mask[0].all() and mask[1].sum() == 2 and mask[1, -2:].all()
    np.testing.assert_allclose(vectors[0], long[0][-20:], rtol=1e-6)
    assert ages[0, -1] == 1.0 and kinds[1, -1] == 2
