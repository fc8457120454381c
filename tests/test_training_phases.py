"""The two phases of training: the first learns at its own softmax temperature; the network phase's patience
runs out only once it is measurably below the best epoch so far."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import appliance.training
from appliance.config import load_config
from appliance.schedule import within_noise
from appliance.training import train_tower
from tests.test_training import small_shop

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def config():
    cfg = load_config()
    training = dataclasses.replace(cfg.training, epochs=2, batch_size=64, scalar_batch_size=64, min_network_steps=0)
    return cfg.tower, training, cfg.events.weights


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
