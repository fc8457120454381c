"""The next step's inputs prepared in a thread (`training.prepare_ahead`): the same run as without it, in order,
one batch ahead, and never while the loss itself draws from the generator."""

import dataclasses
import threading

import pytest
import torch

from appliance.batches import ahead
from appliance.config import load_config
from appliance.training import train_tower
from tests.test_training import small_shop


@pytest.fixture(scope="module")
def config():
    cfg = load_config()
    # shared columns drawn from a catalog larger than them, the moment prior on: every part of `prepare` runs
    training = dataclasses.replace(cfg.training, epochs=2, batch_size=64, scalar_batch_size=64, min_network_steps=0,
                                   negatives="shared", shared_negatives=16, whole_catalog=0)
    return cfg.tower, training, cfg.events.weights


def _train(config, **replace):
    tower, training, weights = config
    inter, vectors = small_shop(seed=7)
    threads = set()
    model, report = train_tower(inter, vectors, tower, dataclasses.replace(training, **replace), weights, 72.0,
                                progress=lambda e: threads.update(t.name for t in threading.enumerate()))
    return model, report, any(name.startswith("batch-prep") for name in threads)


def test_the_thread_prepares_the_same_run_as_inline(config):
    inline, inline_report, inline_thread = _train(config, prepare_ahead=False)
    threaded, threaded_report, thread = _train(config, prepare_ahead=True)
    assert thread and not inline_thread
    assert threaded_report.losses == inline_report.losses and threaded_report.epochs > threaded_report.scalar_epochs
    assert threaded_report.validation == inline_report.validation
    for name, tensor in inline.state_dict().items():
        assert torch.equal(tensor, threaded.state_dict()[name]), name


def test_a_loss_that_draws_its_own_negatives_prepares_inline(config):
    """`sampled` draws from the generator the columns come from: a thread would reorder the draws."""
    _, report, thread = _train(config, prepare_ahead=True, negatives="sampled")
    _, inline_report, _ = _train(config, prepare_ahead=False, negatives="sampled")
    assert not thread and report.losses == inline_report.losses


def test_ahead_yields_in_order_and_prepares_one_batch_ahead_in_another_thread():
    made, used = [], []

    def make(i):
        made.append((i, threading.get_ident(), len(used)))
        return i

    for i in ahead(make, 5, thread=True):
        used.append(i)
    assert used == [0, 1, 2, 3, 4]
    assert {ident for _, ident, _ in made} != {threading.get_ident()}
    assert all(i - done <= 1 for i, _, done in made)  # batch i is made once batch i - 2 is used: one ahead
    assert list(ahead(make, 3, thread=False)) == [0, 1, 2] and made[-1][1] == threading.get_ident()
    assert list(ahead(make, 0, thread=True)) == []
