"""The user tower: a customer's recent interactions -> one unit vector in the product-vector space.

No I/O here. The item tower is the (frozen) sentence encoder, so a user vector is scored against product
vectors by cosine similarity. `mean_vector` is the no-training fallback with the same output contract.

Shapes: B customers, T history slots (oldest first, left-padded), D product-vector dim, W attention width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from appliance.config_sections import TowerConfig
from appliance.types import EVENT_NAMES

AGE_FREQUENCIES = 8  # sinusoidal features of log(1 + age in hours)


class UserTower(nn.Module):
    """Self-attention over recent interactions, recency-decayed attention pooling, residual weighted mean.

    At initialisation the output equals the recency-weighted mean of the input product vectors (the
    projection starts at zero), so an untrained or lightly trained tower is already a sensible model.

    The user vector retrieves by cosine; `popularity_weight` (learned, 0 at first) adds a popularity prior to
    the ranking: a product vector says what a product is, not how many people want it, and within a taste
    the popular products are the likelier next ones. `cold_quantile` (chosen on validation, not learned by
    gradient) places products nobody has touched yet among the known ones instead of below them all;
    `cold_share` (chosen on validation too) gives them a share of the list's places by similarity alone.
    """

    def __init__(self, config: TowerConfig, dim: int) -> None:
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"tower.heads ({config.heads}) must divide tower.width ({config.width})")
        self.config = config
        self.dim = dim
        width = config.width
        self.inp = nn.Linear(dim, width)
        self.kind = nn.Embedding(len(EVENT_NAMES), width)
        self.age = nn.Linear(2 * AGE_FREQUENCIES, width)
        self.register_buffer("freqs", 2.0 ** torch.arange(AGE_FREQUENCIES, dtype=torch.float32) / 8.0)
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(
                width, config.heads, dim_feedforward=2 * width, dropout=config.dropout,
                batch_first=True, norm_first=True,
            )
            for _ in range(config.layers)
        ])
        self.norm = nn.LayerNorm(width)
        self.pool = nn.Linear(width, 1)
        self.out = nn.Linear(width, dim, bias=False)
        nn.init.zeros_(self.out.weight)
        # learnable recency decay: weight = 2 ** (-age / half_life), newer interactions weigh more
        self.log_half_life = nn.Parameter(torch.tensor(math.log(config.recency_half_life_hours)))
        self.kind_bias = nn.Parameter(torch.zeros(len(EVENT_NAMES)))  # per-kind weight of the residual mean
        # ranking score = cosine(user, product) + popularity_weight * ranking.popularity_prior(popularity)
        self.popularity_weight = nn.Parameter(torch.zeros(()))
        # where a product without any event ranks in the prior: ranking.popularity_prior's cold_quantile (0: at 0)
        self.register_buffer("cold_quantile", torch.zeros(()))
        # share of the list's places given to products without events, by similarity alone (ranking.cold_slots)
        self.register_buffer("cold_share", torch.zeros(()))

    def forward(self, vectors, kinds, age_hours, mask, projected=None, attention=True):
        """vectors (B, T, D) float, kinds (B, T) long, age_hours (B, T) float >= 0, mask (B, T) bool (True = real).

        Returns (B, D) unit vectors; a row without any real interaction returns zeros. `projected` (B, T, W) is
        `self.inp(vectors)` when the caller has it cheaper (training projects each product of a batch once).
        `attention=False` leaves out the attention branch: exact while `out` is still zero (training's first
        phase, which learns only the scalars), and 3-4x cheaper.
        """
        empty = ~mask.any(dim=1)  # (B,)
        mask = mask.clone()
        mask[empty, -1] = True  # keep softmax finite; the row is zeroed at the end
        age = age_hours.clamp(min=0.0)
        log_decay = -age * (math.log(2.0) / self.log_half_life.exp())  # (B, T)
        neg_inf = torch.finfo(vectors.dtype).min
        mean_logits = (log_decay + self.kind_bias[kinds]).masked_fill(~mask, neg_inf)  # (B, T)
        mean = (mean_logits.softmax(dim=1)[:, None, :] @ vectors).squeeze(1)  # (B, D)
        user = F.normalize(mean, dim=-1)  # (B, D)
        if attention:
            log_age = torch.log1p(age)[..., None] * self.freqs  # (B, T, F)
            age_feats = torch.cat([torch.sin(log_age), torch.cos(log_age)], dim=-1)  # (B, T, 2F)
            x = self.inp(vectors) if projected is None else projected  # (B, T, W)
            x = x + self.kind(kinds) + self.age(age_feats)
            for block in self.blocks:
                x = block(x, src_key_padding_mask=~mask)  # (B, T, W)
            x = self.norm(x)
            pool_logits = (self.pool(x).squeeze(-1) + log_decay).masked_fill(~mask, torch.finfo(x.dtype).min)
            pooled = (pool_logits.softmax(dim=1)[:, None, :] @ x).squeeze(1)  # (B, W)
            user = user + self.out(pooled)  # (B, D)
        return F.normalize(user, dim=-1) * (~empty)[:, None]


def pad_histories(
    histories: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], length: int, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per customer (vectors (t, D), kinds (t,), age_hours (t,)), oldest first -> left-padded batch arrays.

    Keeps each customer's `length` most recent interactions. Returns vectors (B, T, D) float32,
    kinds (B, T) int64, age_hours (B, T) float32, mask (B, T) bool.
    """
    count = len(histories)
    vectors = np.zeros((count, length, dim), dtype=np.float32)
    kinds = np.zeros((count, length), dtype=np.int64)
    ages = np.zeros((count, length), dtype=np.float32)
    mask = np.zeros((count, length), dtype=bool)
    for b, (vec, kind, age) in enumerate(histories):
        t = min(len(kind), length)
        if t:
            vectors[b, length - t:] = np.asarray(vec)[-t:]
            kinds[b, length - t:] = np.asarray(kind)[-t:]
            ages[b, length - t:] = np.asarray(age)[-t:]
            mask[b, length - t:] = True
    return vectors, kinds, ages, mask


@torch.no_grad()
def user_vectors(
    model: UserTower, vectors: np.ndarray, kinds: np.ndarray, age_hours: np.ndarray, mask: np.ndarray,
    batch_size: int = 512, attention: bool = True,
) -> np.ndarray:
    """Numpy in, numpy out: (B, T, D), (B, T), (B, T), (B, T) -> (B, D) float32 unit vectors (eval mode).
    `attention=False`: the tower's residual mean alone (its text side: the mean of the history's product vectors
    with its learned recency and kind weights), what `bench quality --cold-by-text` ranks the cold slots by."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(vectors), batch_size):
        sl = slice(i, i + batch_size)
        out.append(model(
            torch.as_tensor(vectors[sl], dtype=torch.float32),
            torch.as_tensor(kinds[sl], dtype=torch.long),
            torch.as_tensor(age_hours[sl], dtype=torch.float32),
            torch.as_tensor(mask[sl], dtype=torch.bool),
            attention=attention,
        ).numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.dim), dtype=np.float32)


def mean_vector(
    vectors: np.ndarray, kinds: np.ndarray, age_hours: np.ndarray, mask: np.ndarray,
    weights: Mapping[str, float], half_life_hours: float,
) -> np.ndarray:
    """The no-training user vector: event-weighted, recency-decayed mean of recent product vectors.

    vectors (B, T, D), kinds (B, T), age_hours (B, T), mask (B, T) -> (B, D) float32 unit vectors
    (zeros for a row without interactions). weight = weights[kind] * 2 ** (-age / half_life_hours).
    """
    kind_weight = np.array([weights[name] for name in EVENT_NAMES], dtype=np.float64)
    age = np.where(mask, np.clip(age_hours, 0.0, None), np.inf)  # (B, T)
    newest = age.min(axis=1, keepdims=True)  # decay relative to the newest, so old histories do not underflow
    w = kind_weight[kinds] * np.exp2(-(age - np.where(np.isfinite(newest), newest, 0.0)) / half_life_hours)
    mean = np.einsum("bt,btd->bd", w, vectors.astype(np.float64))  # (B, D)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    return (mean / np.where(norm > 0, norm, 1.0)).astype(np.float32)
