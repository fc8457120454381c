"""A training step's inputs, gathered from the examples before the step (no parameter is read).

What a step needs from the data (the (B, T, D) history block, kinds, ages, the shared columns, the prior's rows,
each distinct history product's vector) is numpy and torch indexing outside the tower's matrix products (~10 ms
of a ~90 ms step at 10k products in float32, BENCHMARKS.md "Training", seventh round). Preparing the next step in
a thread beside the current one was measured and removed: on an idle machine two torch threads were faster, on a
busy one it gained nothing (BENCHMARKS.md "Training", eighth and ninth rounds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from appliance.examples import Examples, MomentPrior, PopularityPrior, batch_inputs
from appliance.interactions import Interactions

Columns = Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor | None]]


@dataclass(frozen=True)
class Batch:
    target: torch.Tensor  # (B,) positive products
    weight: torch.Tensor  # (B,) loss weights
    inputs: tuple[torch.Tensor, ...]  # the tower's vectors (B, T, D), kinds (B, T), ages (B, T), mask (B, T)
    seen: torch.Tensor  # (B, T) history products (padding repeats the newest)
    columns: torch.Tensor | None  # (K,) the shared columns (None: every product)
    log_inclusion: torch.Tensor | None  # (K,)
    prior: torch.Tensor | None  # (B, K) the prior's log(1 + popularity), before the learned weight
    own: torch.Tensor | None  # (B,) ... of each row's positive
    distinct: torch.Tensor | None  # (U, D) the vectors of the batch's distinct history products (attention only)
    slot: torch.Tensor | None  # (B, T) each slot's row in `distinct`


def prepare(
    ex: Examples, target: torch.Tensor, weight: torch.Tensor, interactions: Interactions, low: torch.Tensor,
    prior: PopularityPrior | MomentPrior | None, columns_of: Columns, attention: bool,
) -> Batch:
    """The inputs of one step over the examples `ex` (their `target` and `weight` already taken)."""
    hist = interactions.item[ex.rows]  # (B, T); padding repeats the newest (always real) history item
    seen = torch.as_tensor(np.where(ex.mask, hist, hist[:, -1:]))
    columns, log_inclusion = columns_of(target)
    rows = own = None
    if prior is not None:
        rows, own = prior.rows(ex, columns), prior.positive(ex)
    distinct = slot = None
    if attention:  # each product of the batch projected once
        unique, inverse = np.unique(hist, return_inverse=True)
        distinct, slot = low[torch.as_tensor(unique)], torch.as_tensor(inverse.reshape(hist.shape))
    return Batch(target, weight, batch_inputs(ex, interactions, low), seen, columns, log_inclusion, rows, own,
                 distinct, slot)

