"""A training step's inputs, gathered from the examples before the step (no parameter is read), and a helper
that prepares the next step's inputs in a thread of its own while the current step computes.

What a step needs from the data (the (B, T, D) history block, kinds, ages, the shared columns, the prior's rows,
each distinct history product's vector) is numpy and torch indexing outside the tower's matrix products (~10 ms
of a ~90 ms step at 10k products, BENCHMARKS.md "Training", seventh round). torch's ops and numpy's larger copies
release the GIL, so one thread gathering step i + 1 runs beside step i's products on the other core, without the
barriers two OpenMP threads wait at. The batches come in the same order and draw the shared columns from the same
generator in the same order, so a run is the same run with or without the thread: the caller runs it only while
nothing else draws from that generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from appliance.examples import Examples, MomentPrior, PopularityPrior, batch_inputs
from appliance.interactions import Interactions

Columns = Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor | None]]
T = TypeVar("T")


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


def ahead(make: Callable[[int], T], count: int, thread: bool) -> Iterator[T]:
    """make(0), ..., make(count - 1) in order; with `thread`, make(i + 1) runs in a thread while the caller uses
    make(i) (one ahead: never two batches waiting)."""
    if not thread:
        yield from (make(i) for i in range(count))
        return
    with ThreadPoolExecutor(1, thread_name_prefix="batch-prep") as pool:
        pending = pool.submit(make, 0) if count else None
        for i in range(count):
            done = pending.result()
            pending = pool.submit(make, i + 1) if i + 1 < count else None
            yield done
