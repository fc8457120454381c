"""The training recipe's plan, as pure functions: the columns a batch is scored against, the network phase's
batches and epochs for a shop's size, the learning rate's schedule, which validated epoch is kept, and the
precision of the matrix products on this CPU."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from appliance.config_sections import TrainingConfig

MAX_EPOCH_GROWTH = 3  # a small shop's network phase runs at most 3 x `epochs` (see network_plan)


def shared_columns(
    n: int, k: int, positives: torch.Tensor, share: torch.Tensor | None, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch's shared columns: a uniform draw of `k` of the `n` products and, with `share` (N,) (each product's
    share of the training positives), the batch's `positives` (B,) too: products drawn by popularity, the hard
    negatives a uniform draw mostly misses (the mixed negatives of Yang et al., WWW 2020). Returns the columns
    (K',) and the log of each one's probability of being among them (None: uniform, k / n)."""
    drawn = torch.randperm(n, generator=generator)[:k]
    if share is None:
        return drawn, None
    columns = torch.cat([drawn, positives]).unique()
    # missed by the uniform draw (1 - k / n) and by each of the batch's B positives (1 - share), independently
    missed = (1.0 - k / n) * (1.0 - share[columns]) ** len(positives)
    return columns, torch.log1p(-missed).float()


def network_plan(size: int, config: TrainingConfig) -> tuple[int, int, float]:
    """The network phase's batch, epochs and learning-rate scale for `size` examples an epoch. A shop with few
    examples (the demo: 6,243) gets 13 steps an epoch at `batch_size`, too few for the network to pass the first
    phase: below `min_network_steps` in all, batches shrink (not under `scalar_batch_size`) with the rates scaled
    linearly by the batch (Goyal et al. 2017), then epochs are added until the steps are reached, up to
    `MAX_EPOCH_GROWTH` times `epochs` (a handful of examples must not train for a thousand epochs)."""
    want = config.min_network_steps
    if want <= 0 or config.epochs <= 0 or math.ceil(size / config.batch_size) * config.epochs >= want:
        return config.batch_size, config.epochs, 1.0
    per_epoch = math.ceil(want / config.epochs)
    batch = min(config.batch_size, max(config.scalar_batch_size, size // per_epoch))
    epochs = min(MAX_EPOCH_GROWTH * config.epochs, max(config.epochs, math.ceil(want / math.ceil(size / batch))))
    return batch, epochs, batch / config.batch_size


def matmul_precision(precision: str) -> str:
    """`training.precision` as run here: "auto" is bfloat16 on a CPU that multiplies it natively (AVX-512 BF16 or
    AMX) and float32 on the others, where torch emulates bfloat16 products: 5.9x the CPU of float32 for a
    (128, 384) x (384, 2,794) product on an AVX2 EPYC (BENCHMARKS.md "Retail", fifth round)."""
    if precision != "auto":
        return precision
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native else "float32"


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """The learning rate's multiplier at `step`: linear from 1 / warmup to 1 over `warmup` steps, then constant
    (total 0) or a cosine down to 0 at step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if not total:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))


def latest_within_noise(
    validated: Sequence[tuple[int, bool, np.ndarray]], best_epoch: int, within: float
) -> int | None:
    """Index into `validated` ((epoch, network phase?, per-example validation NDCG@10 (V,)) in order) of the
    latest network-phase epoch after a network-phase `best_epoch` whose mean is within `within` standard errors
    of the best's (the standard error of the paired per-example differences); None: keep the best (`within` 0,
    the best epoch not among them or one of the first phase, whose constant rate has no converged end). A small
    validation set's best epoch is often an early one by chance (MovieLens's ~600 customers); the end of the
    network phase's cosine is the converged model, kept unless it is measurably worse."""
    best = next((v for v in validated if v[0] == best_epoch), None)
    if within <= 0 or best is None or not best[1] or len(best[2]) < 2:
        return None
    for i in range(len(validated) - 1, -1, -1):
        epoch, phase, rows = validated[i]
        if epoch <= best_epoch or not phase:
            continue
        if within_noise(rows, best[2], within):
            return i
    return None


def level_with_best(validated: Sequence[tuple[int, bool, np.ndarray]], best_epoch: int, within: float) -> bool:
    """Whether the latest of `validated` (as `latest_within_noise`'s) is within `within` standard errors of
    `best_epoch`'s (False for 0: off, or a best without per-example rows, the initial tower's). The network
    phase's patience runs out only when it is not: level with the best it is still dipping and climbing (the
    demo's passes a first-phase best after 10 epochs), measurably below it has diverged (retail's collapse)."""
    best = next((rows for epoch, _, rows in validated if epoch == best_epoch), None)
    if within <= 0 or best is None or len(best) < 2:
        return False
    return within_noise(validated[-1][2], best, within)


def within_noise(rows: np.ndarray, best: np.ndarray, within: float) -> bool:
    """Whether per-example validation NDCG@10 `rows` (V,) are at most `within` standard errors (of the paired
    differences) below `best` (V,)."""
    difference = rows - best
    return bool(difference.mean() >= -within * difference.std(ddof=1) / math.sqrt(len(difference)))
