"""The item-side correction (an ablation, `appliance.item_side`): only products with enough training events move,
the vectors stay unit length, and the epoch kept is the validation's best (epoch 0: the text vectors)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from appliance.item_side import item_correction
from appliance.training import train_tower
from tests.test_cold_start import CFG, WEIGHTS, launch_shop


def test_the_correction_moves_only_products_with_enough_events_and_keeps_the_best_validation_epoch():
    inter, vectors = launch_shop()
    training = dataclasses.replace(CFG.training, epochs=1, batch_size=64)
    model, report = train_tower(inter, vectors, CFG.tower, training, WEIGHTS, 720.0)
    adapted, history = item_correction(model, inter, vectors, training, WEIGHTS, min_events=3, epochs=2,
                                       learning_rate=0.05)
    unslotted = next(overall for share, overall, _ in report.cold_shares if share == 0.0)  # the tower's own order
    assert len(history) == 3 and history[0] == pytest.approx(unslotted, abs=1e-6)
    assert np.allclose(np.linalg.norm(adapted, axis=1), 1.0, atol=1e-5)
    counts = np.bincount(inter.item, minlength=len(vectors))
    moved = np.abs(adapted - vectors).max(1) > 1e-6
    assert not moved[counts < 3].any()
    assert moved.any() == (max(history[1:]) > history[0])  # corrected only when an epoch beat the text vectors
