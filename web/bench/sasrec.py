"""SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation") as the bench's sequential yardstick.

The paper's model: item embeddings (scaled by sqrt(hidden)) plus learned positions, `blocks` causal
self-attention blocks (pre-layer-norm queries, one head, point-wise feed-forward, residuals, dropout), a last
layer norm; the score of item i after position t is the dot product of the output at t with i's embedding
(shared with the input). Hyper-parameters are the paper's: 2 blocks, 1 head, hidden 50, Adam lr 1e-3
(betas 0.9/0.98), batch 128, max length 200 and dropout 0.2 on dense data (MovieLens-1M), 50 and 0.5 on sparse.

Two losses: `bce`, the paper's (each position's next item against one random item the customer never
touched), and `ce`, a softmax over the whole catalog (the variant later full-ranking studies found stronger,
e.g. Klenitskiy & Vasilev 2023, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?").
Training sequences are the customers' events in time order from the training part minus its validation
targets (`als.validation_split`); validated (full-ranking NDCG@10) about every 50 optimizer steps, it stops
after 5 validations without a gain or at the paper's 200 epochs, and keeps the best validated epoch. At test
time the model reads each customer's latest events before the test moment.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from appliance.config_sections import EvaluationConfig
from appliance.evaluation import PROMOTION_METRIC, Split, evaluate
from appliance.interactions import Interactions, slices_before, window_rows
from web.bench.als import validation_split


@dataclass(frozen=True)
class SasRecParams:
    loss: str = "ce"  # "ce": softmax over the catalog; "bce": the paper's one sampled negative per position
    hidden: int = 50
    blocks: int = 2
    heads: int = 1
    max_length: int = 50  # the paper: 200 for MovieLens-1M, 50 for the sparse sets
    dropout: float = 0.5  # the paper: 0.2 for MovieLens-1M, 0.5 for the sparse sets
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 200  # upper bound (the paper's)
    eval_steps: int = 50  # optimizer steps between validations, rounded up to whole epochs
    patience: int = 5  # validations without a better NDCG@10 before stopping
    ce_chunk: int = 4096  # positions per softmax chunk (bounds the (positions, N) logits in memory)


def params_for(dataset: str, loss: str) -> SasRecParams:
    dense = dataset == "movielens"  # ~165 ratings per user, like ML-1M; demo and retail are short and sparse
    return SasRecParams(loss=loss, max_length=200 if dense else 50, dropout=0.2 if dense else 0.5)


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.forward_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.forward_net = nn.Sequential(nn.Linear(hidden, hidden), nn.Dropout(dropout), nn.ReLU(),
                                         nn.Linear(hidden, hidden), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, causal: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.attention_norm(x)  # (B, L, H); keys and values are the un-normalised inputs, as in the paper's code
        x = q + self.attention(q, x, x, attn_mask=causal, need_weights=False)[0]
        x = self.forward_norm(x)
        return (x + self.forward_net(x)) * keep


class SasRec(nn.Module):
    def __init__(self, n_items: int, params: SasRecParams) -> None:
        super().__init__()
        self.params = params
        self.item = nn.Embedding(n_items + 1, params.hidden, padding_idx=0)  # row 0: padding; row i + 1: item i
        self.position = nn.Embedding(params.max_length + 1, params.hidden, padding_idx=0)
        self.dropout = nn.Dropout(params.dropout)
        self.blocks = nn.ModuleList(_Block(params.hidden, params.heads, params.dropout) for _ in range(params.blocks))
        self.last_norm = nn.LayerNorm(params.hidden, eps=1e-8)
        for name, p in self.named_parameters():
            if p.dim() > 1 and "norm" not in name:
                nn.init.xavier_normal_(p)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) item ids + 1, left-padded with 0 -> (B, L, H) the state after each position."""
        keep = (seq > 0).unsqueeze(-1)  # (B, L, 1)
        positions = torch.arange(1, seq.shape[1] + 1).expand_as(seq) * (seq > 0)
        x = self.dropout(self.item(seq) * math.sqrt(self.params.hidden) + self.position(positions)) * keep
        causal = torch.triu(torch.ones(seq.shape[1], seq.shape[1], dtype=torch.bool), diagonal=1)
        for block in self.blocks:
            x = block(x, causal, keep)
        return self.last_norm(x)

    def catalog(self) -> torch.Tensor:
        return self.item.weight[1:]  # (N, H)


def _sequences(train: Interactions, max_length: int) -> tuple[torch.Tensor, torch.Tensor, list[set[int]]]:
    """Per customer with 2+ events: inputs (U, L) and next-item targets (U, L) as ids + 1 (0 = none), left-padded."""
    _, starts, ends = train.bounds()
    keep = ends - starts >= 2
    starts, ends = starts[keep], ends[keep]
    rows, mask = window_rows(ends - 1, starts, max_length)  # inputs: up to L events before the last
    inputs = np.where(mask, train.item[rows] + 1, 0)
    targets = np.where(mask, train.item[np.minimum(rows + 1, len(train) - 1)] + 1, 0)
    touched = [set(train.item[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]
    return torch.as_tensor(inputs), torch.as_tensor(targets), touched


class SasRecScorer:
    """A trained SASRec: scores the catalog from the customer's latest events before `at`."""

    def __init__(self, model: SasRec, history: Interactions, name: str = "sasrec") -> None:
        self.model, self.history, self.name = model, history, name

    @torch.no_grad()
    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        self.model.eval()
        starts, ends = slices_before(self.history, customers, at)
        rows, mask = window_rows(ends, starts, self.model.params.max_length)
        seq = torch.as_tensor(np.where(mask, self.history.item[rows] + 1, 0))
        state = self.model(seq)[:, -1]  # (C, H) after the newest event
        return (state @ self.model.catalog().T).numpy()


@dataclass
class SasRecReport:
    params: dict[str, Any]
    epochs: int
    best_epoch: int
    best_validation_ndcg: float
    train_seconds: float
    validation: list[float]


def _loss(model: SasRec, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
    state = model(inputs)  # (B, L, H)
    real = targets > 0
    if negatives is not None:  # BCE: the next item against one sampled negative, at every real position
        pos = (state * model.item(targets)).sum(-1)
        neg = (state * model.item(negatives)).sum(-1)
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none") \
            + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
        return loss[real].mean()
    flat, label = state[real], targets[real] - 1  # (P, H), (P,)
    total = torch.zeros(())
    for i in range(0, len(label), model.params.ce_chunk):
        logits = flat[i:i + model.params.ce_chunk] @ model.catalog().T  # (p, N)
        total = total + F.cross_entropy(logits, label[i:i + model.params.ce_chunk], reduction="sum")
    return total / len(label)


def _negatives(targets: torch.Tensor, touched: list[set[int]], n_items: int, rng: np.random.Generator) -> torch.Tensor:
    """(B, L) one random item per real position that the customer never touched (ids + 1)."""
    out = rng.integers(n_items, size=tuple(targets.shape))
    for u, seen in enumerate(touched):
        bad = np.flatnonzero([v in seen for v in out[u]])
        while len(bad):
            out[u, bad] = rng.integers(n_items, size=len(bad))
            bad = bad[[out[u, b] in seen for b in bad]]
    return torch.as_tensor(out + 1) * (targets > 0)


def train_sasrec(
    split: Split, n_items: int, params: SasRecParams, evaluation: EvaluationConfig, seed: int,
) -> tuple[SasRecScorer, SasRecReport]:
    """Train on the training part minus its validation targets; keep the epoch with the best validation NDCG@10."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    val = validation_split(split, evaluation.holdout)
    inputs, targets, touched = _sequences(val.train, params.max_length)
    model = SasRec(n_items, params)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate, betas=(0.9, 0.98))
    metric_only = replace(evaluation, ks=(10,))
    best, best_state, best_epoch, history, waited, epoch = -1.0, None, 0, [], 0, 0
    eval_every = max(1, math.ceil(params.eval_steps / math.ceil(len(inputs) / params.batch_size)))  # epochs
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.as_tensor(rng.permutation(len(inputs)))
        for i in range(0, len(order), params.batch_size):
            idx = order[i:i + params.batch_size]
            negatives = _negatives(targets[idx], [touched[j] for j in idx.tolist()], n_items, rng) \
                if params.loss == "bce" else None
            loss = _loss(model, inputs[idx], targets[idx], negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch % eval_every and epoch < params.epochs:
            continue
        score = evaluate([SasRecScorer(model, val.train)], val, n_items, metric_only)["models"]["sasrec"]
        history.append(score[PROMOTION_METRIC])
        if history[-1] > best:
            best, best_state, best_epoch, waited = history[-1], copy.deepcopy(model.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= params.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    report = SasRecReport(asdict(params), epoch, best_epoch, best, time.perf_counter() - started, history)
    return SasRecScorer(model, split.train, f"sasrec_{params.loss}"), report
