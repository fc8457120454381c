"""The training loss: a weighted softmax over cosines (plus the popularity prior) / temperature, against the
negatives `training.negatives` names (see `appliance.training` for the recipe around it)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from appliance.config_sections import TrainingConfig


def contrastive_loss(
    user: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, item_vectors: torch.Tensor,
    log_q: torch.Tensor, config: TrainingConfig, generator: torch.Generator, seen: torch.Tensor | None = None,
    prior: torch.Tensor | None = None, columns: torch.Tensor | None = None, own: torch.Tensor | None = None,
    log_inclusion: torch.Tensor | None = None, low: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted softmax cross-entropy; the positive of row i is column i (in-batch) or column 0 (the others).

    `full` and `shared` score the positive against the products `columns` (K,) (None: all N; `shared`: drawn
    for the whole batch), leaving out each row's positive and its history `seen` (B, T); each column's
    exponential is divided by its probability of being drawn, `log_inclusion` (K,) (None: a uniform draw, K / N),
    so the sum estimates the full one (Horvitz-Thompson; the logQ correction of Yi et al., RecSys 2019).
    `log_q` (N,) is the log of each product's share of the training positives: an in-batch column's expected
    count in this batch is B times it (the batch's own size: the phases and the last step differ).
    `prior` is added to the cosines: (B, K) over the columns (full, shared, with `own` (B,) the positive's) or
    (B, N) (sampled, in_batch, mixed); None = no prior. `low` is `item_vectors` already in autocast's dtype
    (bfloat16) for the (B, K) product: the same values, without casting the columns every step."""
    B, N = len(target), len(item_vectors)
    if config.negatives in ("full", "shared"):
        K = N if columns is None else len(columns)
        table = item_vectors if low is None else low
        candidates = table if columns is None else table[columns]  # (K, D)
        negative = user @ candidates.T  # (B, K)
        positive = (user * item_vectors[target]).sum(-1)  # (B,)
        if prior is not None:
            negative, positive = negative + prior, positive + own
        where = torch.full((N,), K)  # (N,) column of each product; K: not among the columns
        where[slice(None) if columns is None else columns] = torch.arange(K)
        hidden = torch.cat([target[:, None]] + ([seen] if seen is not None else []), dim=1)  # (B, 1 + T)
        if log_inclusion is None:
            log_inclusion = torch.full((K,), math.log(K / N))
        negative = torch.cat([negative / config.temperature - log_inclusion, torch.zeros(B, 1)], dim=1)
        negative = negative.scatter(1, where[hidden], -math.inf)[:, :K]  # column K: products not among them
        logits = torch.cat([positive[:, None] / config.temperature, negative], dim=1)  # (B, 1 + K)
        loss = F.cross_entropy(logits.float(), torch.zeros(B, dtype=torch.long), reduction="none")
        return (loss * weight).sum() / weight.sum()
    if prior is None:
        prior = torch.zeros(B, N)
    positive = item_vectors[target]  # (B, D)
    blocks, label = [], torch.arange(B)
    if config.negatives in ("in_batch", "mixed"):
        expected = log_q[target] + math.log(B)  # log of each column's expected count among the B positives
        logits = (user @ positive.T + prior[:, target]) / config.temperature - expected[None, :]  # (B, B)
        same = (target[:, None] == target[None, :]) & ~torch.eye(B, dtype=torch.bool)
        blocks.append(logits.masked_fill(same, -math.inf))  # a duplicate positive is not a negative
    else:
        own = prior.gather(1, target[:, None])  # (B, 1)
        blocks.append(((user * positive).sum(-1, keepdim=True) + own) / config.temperature)  # (B, 1)
        label = torch.zeros(B, dtype=torch.long)
    if config.negatives in ("sampled", "mixed"):
        S = config.sampled_negatives
        negative = torch.randint(N, (B, S), generator=generator)  # (B, S) uniform: Q = S / N
        cosines = torch.einsum("bd,bsd->bs", user, item_vectors[negative])  # (B, S)
        logits = (cosines + prior.gather(1, negative)) / config.temperature
        if config.negatives == "mixed":
            logits = logits - math.log(S / N)  # same correction scale as the in-batch columns
        blocks.append(logits.masked_fill(negative == target[:, None], -math.inf))
    loss = F.cross_entropy(torch.cat(blocks, dim=1), label, reduction="none")  # (B,)
    return (loss * weight).sum() / weight.sum()
