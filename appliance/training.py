"""Contrastive training of the user tower, as a recipe: examples -> batches -> loss -> early stopping.

An example is one event of a customer (the positive: the next product it interacted with) and the up-to-
`history` events before it (ages measured from the positive's time, so no future leaks in). Only first
interactions with a product are positives: seen products are never recommended, so predicting repeats is
not the task. The loss is a softmax over cosine similarities / temperature against negatives that are
`full` (every product but the example's history: the evaluation's own ranking task), `sampled` (uniform
random products), `in_batch` (the other positives, logQ-corrected) or `mixed` (both).

The tower starts as `mean_vector` (same kind weights, same half-life) and validation is measured before the
first epoch too, so the kept model is never worse on validation than that no-training baseline.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from appliance.config import TowerConfig, TrainingConfig
from appliance.errors import InvalidInput
from appliance.evaluation import ranking_metrics
from appliance.interactions import Interactions, window_rows
from appliance.tower import UserTower
from appliance.types import EVENT_NAMES

Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainReport:
    epochs: int  # epochs run
    best_epoch: int  # epoch whose weights were kept (0 = the initial tower, i.e. mean_vector)
    train_seconds: float
    examples: int  # training examples
    validation_examples: int
    best_validation_ndcg: float | None  # NDCG@10 over the full catalog; None without validation examples
    negatives: str
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    validation: list[float] = field(default_factory=list)  # validation NDCG@10: [initial tower, epoch 1, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Examples:
    rows: np.ndarray  # (M, T) history rows into the interactions, oldest first, left-padded
    mask: np.ndarray  # (M, T) True for real history slots
    target: np.ndarray  # (M,) row of the positive event

    def take(self, index: np.ndarray) -> Examples:
        return Examples(self.rows[index], self.mask[index], self.target[index])


def make_examples(interactions: Interactions, history: int) -> Examples:
    """Every first (customer, product) interaction that has at least one earlier event is an example."""
    starts = interactions.row_starts()  # (E,)
    target = np.flatnonzero((np.arange(len(interactions)) > starts) & interactions.first_of_pair())
    rows, mask = window_rows(target, starts[target], history)
    return Examples(rows, mask, target)


def split_validation(
    examples: Examples, interactions: Interactions, fraction: float, rng: np.random.Generator
) -> tuple[Examples, Examples]:
    """A random `fraction` of customers gives its last example to validation (only customers with two or more)."""
    owner = interactions.customer[examples.target]  # (M,) sorted, as targets are
    customers, first, counts = np.unique(owner, return_index=True, return_counts=True)
    last = first + counts - 1
    eligible = np.flatnonzero(counts >= 2)
    n_val = min(int(round(fraction * len(customers))), len(eligible))
    chosen = last[rng.choice(eligible, size=n_val, replace=False)] if n_val else np.zeros(0, dtype=np.int64)
    is_val = np.zeros(len(owner), dtype=bool)
    is_val[chosen] = True
    return examples.take(~is_val), examples.take(is_val)


def batch_inputs(ex: Examples, interactions: Interactions, item_vectors: torch.Tensor):
    """Tensors for the tower: vectors (B, T, D), kinds (B, T), age_hours (B, T), mask (B, T)."""
    rows = torch.as_tensor(ex.rows)
    mask = torch.as_tensor(ex.mask)
    items = torch.as_tensor(interactions.item)[rows]  # (B, T)
    vectors = item_vectors[items] * mask[..., None]  # (B, T, D)
    kinds = torch.as_tensor(interactions.kind)[rows] * mask
    ts = torch.as_tensor(interactions.ts)
    ages = ((ts[torch.as_tensor(ex.target)][:, None] - ts[rows]) / 3600.0) * mask  # (B, T)
    return vectors, kinds, ages.float(), mask


def contrastive_loss(
    user: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, item_vectors: torch.Tensor,
    log_q: torch.Tensor, config: TrainingConfig, generator: torch.Generator, seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted softmax cross-entropy; the positive of row i is column i (in-batch), column 0 (sampled) or
    column target[i] (full, where `seen` (B, T) holds each row's history items, left out as negatives)."""
    B, N = len(target), len(item_vectors)
    if config.negatives == "full":  # every product but the customer's history (B, N), like the evaluation
        logits = user @ item_vectors.T / config.temperature
        if seen is not None:
            logits = logits.scatter(1, seen, -math.inf)
        loss = F.cross_entropy(logits, target, reduction="none")
        return (loss * weight).sum() / weight.sum()
    positive = item_vectors[target]  # (B, D)
    blocks, label = [], torch.arange(B)
    if config.negatives in ("in_batch", "mixed"):
        logits = user @ positive.T / config.temperature - log_q[target][None, :]  # (B, B), logQ correction
        same = (target[:, None] == target[None, :]) & ~torch.eye(B, dtype=torch.bool)
        blocks.append(logits.masked_fill(same, -math.inf))  # a duplicate positive is not a negative
    else:
        blocks.append((user * positive).sum(-1, keepdim=True) / config.temperature)  # (B, 1)
        label = torch.zeros(B, dtype=torch.long)
    if config.negatives in ("sampled", "mixed"):
        S = config.sampled_negatives
        negative = torch.randint(N, (B, S), generator=generator)  # (B, S) uniform: Q = S / N
        logits = torch.einsum("bd,bsd->bs", user, item_vectors[negative]) / config.temperature
        if config.negatives == "mixed":
            logits = logits - math.log(S / N)  # same correction scale as the in-batch columns
        blocks.append(logits.masked_fill(negative == target[:, None], -math.inf))
    loss = F.cross_entropy(torch.cat(blocks, dim=1), label, reduction="none")  # (B,)
    return (loss * weight).sum() / weight.sum()


@torch.no_grad()
def validation_ndcg(
    model: UserTower, val: Examples, interactions: Interactions, item_vectors: torch.Tensor, chunk: int = 256
) -> float:
    """Mean NDCG@10 of the positive over the full catalog, the customer's earlier products excluded."""
    model.eval()
    starts = interactions.row_starts()
    total = 0.0
    for i in range(0, len(val.target), chunk):
        ex = val.take(slice(i, i + chunk))
        scores = (model(*batch_inputs(ex, interactions, item_vectors)) @ item_vectors.T).numpy()  # (c, N)
        counts = ex.target - starts[ex.target]  # earlier events per example
        owner = np.repeat(np.arange(len(counts)), counts)
        earlier = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        scores[owner, interactions.item[np.repeat(starts[ex.target], counts) + earlier]] = -np.inf
        relevant = interactions.item[ex.target][:, None]  # (c, 1)
        total += float(ranking_metrics(scores, relevant, np.ones_like(relevant, bool), (10,))["ndcg@10"].sum())
    model.train()
    return total / len(val.target)


def train_tower(
    interactions: Interactions, item_vectors: np.ndarray, tower: TowerConfig, config: TrainingConfig,
    event_weights: Mapping[str, float], progress: Progress | None = None,
) -> tuple[UserTower, TrainReport]:
    """Train a user tower on `interactions` against the frozen product vectors (N, D); CPU, seeded.

    `progress` receives {"epoch", "step", "steps", "loss"} after every batch and
    {"epoch", "loss", "validation_ndcg", "done": True} after every epoch. With tqdm:
    `bar = tqdm(); train_tower(..., progress=lambda e: bar.update(1) if "step" in e else None)`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # process-wide while training; restored after
    try:
        return _train(interactions, item_vectors, tower, config, event_weights, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    interactions: Interactions, item_vectors: np.ndarray, tower: TowerConfig, config: TrainingConfig,
    event_weights: Mapping[str, float], progress: Progress | None,
) -> tuple[UserTower, TrainReport]:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    vectors = torch.as_tensor(np.asarray(item_vectors, dtype=np.float32))  # (N, D)

    # examples: history -> next new product, the most recent `max_examples`, some customers' last held out
    examples = make_examples(interactions, tower.history)
    if not len(examples.target):
        raise InvalidInput("no training examples: every customer needs at least two interactions with "
                           "different products", field="interactions")
    train, val = split_validation(examples, interactions, config.validation_fraction, rng)
    if len(train.target) > config.max_examples:
        train = train.take(np.argsort(interactions.ts[train.target], kind="stable")[-config.max_examples:])
    kind_weight = np.array([event_weights[name] for name in EVENT_NAMES], dtype=np.float32)
    if not config.event_weighted_loss:
        kind_weight = np.ones_like(kind_weight)
    weight = torch.as_tensor(kind_weight[interactions.kind[train.target]])  # (M,)
    target = torch.as_tensor(interactions.item[train.target])  # (M,)
    freq = np.bincount(interactions.item[train.target], minlength=len(vectors)) + 1.0  # smoothed
    log_q = torch.as_tensor(np.log(config.batch_size * freq / freq.sum()), dtype=torch.float32)  # (N,)

    model = UserTower(tower, vectors.shape[1])
    with torch.no_grad():  # start exactly at `mean_vector`: the residual mean weighs kinds like the event weights
        model.kind_bias.copy_(torch.log(torch.as_tensor([event_weights[n] for n in EVENT_NAMES])))
    scalars = ("log_half_life", "kind_bias")  # few, and far from their best: a faster rate, no decay
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if n not in scalars]},
        {"params": [p for n, p in model.named_parameters() if n in scalars],
         "lr": config.scalar_learning_rate, "weight_decay": 0.0},
    ], lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = math.ceil(len(target) / config.batch_size)
    report = TrainReport(0, 0, 0.0, len(target), len(val.target), None, config.negatives)
    best, best_state, best_epoch, waited = -1.0, None, 0, 0
    if len(val.target):  # epoch 0: the initial tower (= mean_vector) is a candidate too
        best = validation_ndcg(model, val, interactions, vectors)
        best_state = copy.deepcopy(model.state_dict())
        report.validation.append(best)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(target), generator=generator)
        total = 0.0
        for step in range(steps):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            ex = train.take(idx.numpy())
            users = model(*batch_inputs(ex, interactions, vectors))  # (B, D)
            hist = interactions.item[ex.rows]  # (B, T); padding repeats the newest (always real) history item
            seen = torch.as_tensor(np.where(ex.mask, hist, hist[:, -1:]))
            loss = contrastive_loss(users, target[idx], weight[idx], vectors, log_q, config, generator, seen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item()
            if progress:
                progress({"epoch": epoch, "step": step + 1, "steps": steps, "loss": loss.item()})
        report.epochs = epoch
        report.losses.append(total / steps)
        score = validation_ndcg(model, val, interactions, vectors) if len(val.target) else None
        if progress:
            progress({"epoch": epoch, "loss": total / steps, "validation_ndcg": score, "done": True})
        if score is None:
            best_epoch = epoch
            continue
        report.validation.append(score)
        if score > best:
            best, best_state, best_epoch, waited = score, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
        report.best_validation_ndcg = best
    model.eval()
    report.best_epoch = best_epoch
    report.train_seconds = time.perf_counter() - started
    return model, report
