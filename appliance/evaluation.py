"""Honest offline evaluation: a time-based split and full-catalog ranking metrics for any scorer.

Protocol: each customer's events from their `holdout`-th last first interaction with a product on are the
test set; everything before is history (what the scorers may see, and what a model is trained on). Every
scorer ranks the WHOLE catalog (no sampled negatives) with the customer's already-seen items removed; the
relevant items are the test items the customer had not seen before. Ties are broken neutrally: an item tied
with t others counts t/2 of them as ranked above it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from appliance.config_sections import EvaluationConfig
from appliance.interactions import Interactions, seen_matrix

COVERAGE_K = 10  # catalog coverage: share of the catalog in anyone's top-10
PROMOTION_METRIC = "ndcg@10"


class Scorer(Protocol):
    """Scores the whole catalog for customers as of given times (it only knows the history it was built on)."""

    name: str

    def scores(self, customers: np.ndarray, at: np.ndarray) -> np.ndarray:
        """customers (C,) ids, at (C,) seconds since epoch -> (C, N) scores, higher is better."""
        ...


@dataclass(frozen=True)
class Split:
    train: Interactions  # every event before each customer's test events: history and training data
    test: Interactions  # each customer's last `holdout` interactions (and any tied with the first of them)


def time_split(interactions: Interactions, holdout: int) -> Split:
    """Per customer: from the `holdout`-th last first interaction with a product on, events are test; all
    strictly earlier events are train.

    Counting first interactions (not any events) means a test set is made of products new to the customer,
    the task a feed serves: a shopper whose last events only revisit products still has a test item. Events
    tied in time with the cut go to test too, so every test event is strictly after every train event of
    that customer. Customers without enough first interactions after their first event stay in train.
    """
    if holdout < 1:
        raise ValueError("holdout must be >= 1")
    _, starts, ends = interactions.bounds()
    counts = ends - starts
    row = np.arange(len(interactions))
    new = np.flatnonzero(interactions.first_of_pair() & (row > interactions.row_starts()))  # (F,) ascending
    owner = np.repeat(np.arange(len(starts)), counts)[new]  # (F,) customer index of each
    per_customer = np.bincount(owner, minlength=len(starts))  # (C,)
    rank_from_end = np.cumsum(per_customer)[owner] - np.arange(len(new))  # 1 = the customer's last
    cut_rows = new[rank_from_end == holdout]  # at most one per customer
    cut_ts = np.full(len(starts), np.inf)
    cut_ts[owner[rank_from_end == holdout]] = interactions.ts[cut_rows]
    is_test = interactions.ts >= np.repeat(cut_ts, counts)  # (E,)
    return Split(train=interactions.take(~is_test), test=interactions.take(is_test))


def cold_items(split: Split, n_items: int) -> np.ndarray:
    """(N,) bool: products without any training event (new products: an ID-based model knows nothing of them)."""
    return np.bincount(split.train.item, minlength=n_items) == 0


def ranking_metrics(
    scores: np.ndarray, relevant: np.ndarray, relevant_mask: np.ndarray, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-row metrics of full rankings. scores (C, N) with excluded items at -inf; relevant (C, R) item
    columns, relevant_mask (C, R) True for real entries (each row needs at least one).

    Returns {"recall@K", "hr@K", "ndcg@K" for each K, "mrr"} -> (C,) arrays.
    """
    scores = np.where(np.isnan(scores), -np.inf, scores)  # a diverged model ranks nothing (NaN compares false)
    rel_scores = np.take_along_axis(scores, relevant, axis=1)  # (C, R)
    greater = (scores[:, None, :] > rel_scores[:, :, None]).sum(-1)  # (C, R)
    ties = (scores[:, None, :] == rel_scores[:, :, None]).sum(-1) - 1  # (C, R) others with the same score
    rank = 1 + greater + ties // 2  # (C, R) 1-based
    rank = np.where(relevant_mask, rank, np.iinfo(np.int64).max)
    n_rel = relevant_mask.sum(1)  # (C,)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hits = rank <= k  # (C, R)
        dcg = (hits / np.log2(np.minimum(rank, k) + 1.0)).sum(1)
        ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))[np.minimum(n_rel, k) - 1]
        out[f"recall@{k}"] = hits.sum(1) / n_rel
        out[f"hr@{k}"] = hits.any(1).astype(np.float64)
        out[f"ndcg@{k}"] = dcg / ideal
    out["mrr"] = 1.0 / rank.min(1)
    return out


def test_targets(
    split: Split, n_items: int, items: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(customers (C,), at (C,), relevant (C, R), relevant_mask (C, R)) of customers with an unseen test item.

    `items` (N,) bool restricts the relevant items to a slice of the catalog (e.g. `cold_items`): customers
    without a test item in it are left out; the ranking stays over the whole catalog."""
    customers, starts, ends = split.test.bounds()
    at = split.test.ts[starts]  # the moment of the customer's first test event
    test_seen = seen_matrix(split.test, customers, n_items)
    train_seen = seen_matrix(split.train, customers, n_items)
    fresh = test_seen & ~train_seen  # (C, N)
    if items is not None:
        fresh &= items[None, :]
    keep = fresh.any(1) & train_seen.any(1)  # a relevant item and some history to go on
    customers, at, fresh = customers[keep], at[keep], fresh[keep]
    n_rel = fresh.sum(1)
    width = int(n_rel.max()) if len(n_rel) else 1
    relevant_mask = np.arange(width)[None, :] < n_rel[:, None]  # (C, R)
    relevant = np.zeros((len(customers), width), dtype=np.int64)
    relevant[relevant_mask] = np.nonzero(fresh)[1]  # row-major: each row's items in order
    return customers, at, relevant, relevant_mask


def evaluate(
    scorers: Sequence[Scorer], split: Split, n_items: int, config: EvaluationConfig, chunk: int = 256,
    per_customer: bool = False, items: np.ndarray | None = None,
) -> dict[str, Any]:
    """Full-ranking metrics per scorer on the split's test customers -> JSON-able dict.

    {"customers": C, "items": N, "models": {name: {"recall@10": .., "hr@10": .., "ndcg@10": .., ...,
    "mrr": .., "coverage@10": ..}}}. Scorers must have been built from `split.train` only. With `per_customer`,
    also {"per_customer": {name: [NDCG@10 of each test customer, in one fixed order]}} for paired comparisons.
    `items` (N,) bool evaluates one slice of the catalog as the relevant items (`test_targets`).
    """
    customers, at, relevant, relevant_mask = test_targets(split, n_items, items)
    if not len(customers):
        raise ValueError("no test customer with an unseen test item and some history: nothing to evaluate")
    models: dict[str, dict[str, float]] = {}
    rows: dict[str, list[float]] = {}
    for scorer in scorers:
        sums: dict[str, float] = {}
        rows[scorer.name] = []
        covered = np.zeros(n_items, dtype=bool)
        for i in range(0, len(customers), chunk):
            sl = slice(i, i + chunk)
            scores = np.asarray(scorer.scores(customers[sl], at[sl]), dtype=np.float32)  # (c, N)
            scores[seen_matrix(split.train, customers[sl], n_items)] = -np.inf
            metrics = ranking_metrics(scores, relevant[sl], relevant_mask[sl], config.ks)
            for name, values in metrics.items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
            rows[scorer.name] += metrics[PROMOTION_METRIC].tolist()
            k = min(COVERAGE_K, n_items)
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (c, k)
            covered[top[np.isfinite(np.take_along_axis(scores, top, axis=1))]] = True
        models[scorer.name] = {name: total / len(customers) for name, total in sums.items()}
        models[scorer.name][f"coverage@{COVERAGE_K}"] = float(covered.mean())
    out = {"customers": len(customers), "items": n_items, "models": models}
    return {**out, "per_customer": rows} if per_customer else out


def paired_difference(a: Sequence[float], b: Sequence[float], rounds: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over the same customers with a 95 % paired bootstrap interval, and the share of rounds
    in which a's mean is not above b's (a one-sided bootstrap p-value)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    means = diff[np.random.default_rng(seed).integers(len(diff), size=(rounds, len(diff)))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "p": float((means <= 0).mean())}


def format_table(results: Mapping[str, Any]) -> str:
    """The `evaluate` dict as a fixed-width text table, one row per model."""
    models = results["models"]
    if not models:
        return "(no models)"
    columns = list(next(iter(models.values())))
    width = max(12, *(len(name) for name in models))
    lines = [
        f"{results['customers']} customers, full ranking over {results['items']} items",
        f"{'model':<{width}}" + "".join(f"{c:>12}" for c in columns),
    ]
    for name, row in models.items():
        lines.append(f"{name:<{width}}" + "".join(f"{row.get(c, math.nan):>12.4f}" for c in columns))
    return "\n".join(lines)


def should_promote(
    candidate: Mapping[str, float], serving: Mapping[str, float] | None, popularity: Mapping[str, float],
    metric: str = PROMOTION_METRIC,
) -> bool:
    """Promote a candidate only if its NDCG@10 beats both the serving model's and the popularity baseline's.

    All three must be measured on the same split (re-evaluate the serving model rather than trusting the
    metrics stored with it). With no serving model, beating popularity is enough.
    """
    value = candidate[metric]
    if not value > popularity[metric]:
        return False
    return serving is None or value > serving[metric]
