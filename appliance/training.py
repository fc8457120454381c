"""Contrastive training of the user tower, as a recipe: examples -> batches -> loss -> early stopping.

Examples come from `appliance.examples`: only first interactions with a product are positives (seen products
are never recommended, so predicting repeats is not the task). The loss is a softmax over cosine similarities /
temperature against negatives that are `full` (every product but the example's history: the evaluation's own
ranking task), `shared` (the default: one uniform random draw of `shared_negatives` products per batch plus,
with `shared_positives`, the batch's own positives, each column's exponential divided by its probability of
being drawn so the sum estimates the full one; the whole catalog when it is no larger, i.e. exactly `full`),
`sampled` (random products per example), `in_batch` (the other positives, logQ-corrected) or
`mixed`. Cost per step, B examples of T history slots: the tower projects each distinct product of the batch once
(not B * T slots), the loss is one (B, D) x (D, K) product; both run in bfloat16 where the CPU multiplies it
natively (`precision`), validation in float32. An epoch is at most `epoch_examples` examples, so a large shop
trains as many steps as a mid-sized one. A step's inputs are gathered by `appliance.batches`.

The tower starts as `mean_vector` (same kind weights, same half-life) and validation is measured before the
first epoch too, so the kept model is never worse on validation than that no-training baseline. Training runs
in two phases, each stopped early on validation NDCG@10 and starting from the best weights so far: first only
the scalars (recency half-life, per-kind weights, popularity weight), which a small shop can learn reliably, in
small batches and without the attention branch (still zero, so it adds nothing), for at most about
`scalar_examples` examples, at the sharper `scalar_temperature` (weighing the top of the list), then the whole
network at `temperature` in large batches with a one-epoch warm-up (its first epochs dip below the start before
passing it) and a cosine decay of the rate to 0 at `epochs`, validated every `validate_every` epochs (a
validation ranks the whole catalog for each validation customer). When the best
validated epoch is a network one, the latest network epoch within `keep_within` standard errors of it is kept
(`appliance.schedule.latest_within_noise`: a small validation set's best is often an early epoch by chance).
What is validated and kept is an exponential moving average of the weights over the recent steps, which on a
small shop's data is steadier than the weights of the last step. The optimizer is `appliance.optim.AdamW`
(torch's own imports torch._dynamo, seconds of CPU per process).

With the popularity prior on, the logits are (cosine + popularity_weight * log(1 + popularity)) / temperature.
Popularity is either as of each example's moment (`training.prior_as_of = "moment"`: the events strictly before
it, as a feed had them then) or at the end of the training data without the example's own customer (whose
events include the positive itself, which would leak the answer), with its own half-life
(`training.prior_half_life_hours`). A product without any event before that moment ranks at the tower's cold
quantile of the known products' popularity (`appliance.prior`: chosen on validation before the first epoch and
again for the trained weight at the end).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from appliance.batches import Batch, prepare
from appliance.config_sections import TowerConfig, TrainingConfig
from appliance.errors import InvalidInput
from appliance.examples import Examples, MomentPrior, PopularityPrior, make_examples, split_validation
from appliance.interactions import Interactions
from appliance.loss import contrastive_loss
from appliance.optim import AdamW
from appliance.prior import choose_cold_share, choose_prior, validation_grid
from appliance.schedule import (
    latest_within_noise,
    learning_rate_factor,
    level_with_best,
    matmul_precision,
    network_plan,
    shared_columns,
)
from appliance.tower import UserTower
from appliance.types import EVENT_NAMES

Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainReport:
    epochs: int  # epochs run
    best_epoch: int  # epoch whose weights were kept (0 = the initial tower, i.e. mean_vector); see keep_within
    train_seconds: float
    examples: int  # training examples
    validation_examples: int
    best_validation_ndcg: float | None  # NDCG@10 over the full catalog; None without validation examples
    negatives: str
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    validation: list[float] = field(default_factory=list)  # validation NDCG@10: [initial tower, ...] ...
    validated_epochs: list[int] = field(default_factory=list)  # ... after these epochs: [0, 1, 2, ...]
    scalar_epochs: int = 0  # of `epochs`, those of the first phase (only recency, kind weights and the prior)
    popularity_weight: float = 0.0  # the learned prior: ranking score = cosine + this * log(1 + popularity)
    cold_quantile: float = 0.0  # where products without events rank in the prior (appliance.prior)
    cold_share: float = 0.0  # the list's part given to products without events (appliance.prior, cold slots)
    cold_shares: list[tuple[float, float, float]] = field(default_factory=list)  # (share, validation all, cold)
    prior_half_life_hours: float | None = None  # the prior's popularity half-life: serving ranks with the same
    top_epoch: int = 0  # the epoch of the highest validation NDCG@10 (best_epoch: the latest within keep_within)
    precision: str = ""  # of the training's matrix products: training.precision, "auto" resolved for this CPU

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Run:
    """Epochs of one training run, in phases (each its own optimizer), keeping the best validated weights."""

    def __init__(
        self, model: UserTower, train: Examples, val: Examples, interactions: Interactions, vectors: torch.Tensor,
        prior: PopularityPrior | MomentPrior | None, target: torch.Tensor, weight: torch.Tensor, log_q: torch.Tensor,
        config: TrainingConfig, generator: torch.Generator, progress: Progress | None,
    ) -> None:
        self.model, self.train, self.val, self.interactions, self.vectors = model, train, val, interactions, vectors
        self.prior, self.target, self.weight, self.log_q = prior, target, weight, log_q
        self.config, self.generator, self.progress = config, generator, progress
        self.report = TrainReport(0, 0, 0.0, 0, 0, None, config.negatives)
        self.best, self.best_state, self.attention, self.batch = -1.0, None, True, config.batch_size
        self.positive_share = torch.bincount(target, minlength=len(vectors)).double() / len(target)  # (N,)
        self.ramp, self.step = (0, 0), 0  # the learning rate schedule (warm-up steps, cosine steps), step of the phase
        self.rate = 1.0  # the phase's learning rates scaled by (a small shop's smaller batches)
        # the vectors as autocast casts them (same values), once: a step's (B, T, D) history block, its projected
        # products and its (K, D) columns are gathered at half the bytes and never cast
        self.report.precision = matmul_precision(config.precision)
        self.low = vectors.to(torch.bfloat16) if self.report.precision == "bfloat16" else vectors
        self.validated: list[tuple[int, bool, np.ndarray, dict]] = []  # (epoch, network, per-example NDCG, weights)

    def keep(self, score: float, epoch: int) -> None:
        self.best, self.best_state, self.report.best_epoch = score, copy.deepcopy(self.model.state_dict()), epoch

    def phase(self, optimizer: AdamW, patience: int, network: bool) -> None:
        """Up to config.epochs epochs; stops after `patience` epochs without a better validation NDCG@10 (the
        network phase only once its latest is measurably below the best: `level_with_best`).
        `network` False: the first phase, only the scalars learn, the attention branch (still zero) is left out,
        in batches of `scalar_batch_size` (many cheap steps), validated after every epoch, and it ends after
        the epoch in which it has seen `scalar_examples` examples; True: the whole network in batches of
        `batch_size`, after a one-epoch warm-up of the learning rate, validated every `validate_every` epochs
        and after its last."""
        config, warmup, self.attention = self.config, network, network
        self.loss_config = config if network else replace(config, temperature=config.scalar_temperature)
        size = min(len(self.target), config.epoch_examples)
        plan = network_plan(size, config) if network else (config.scalar_batch_size, config.epochs, 1.0)
        self.batch, epochs, self.rate = plan
        steps = math.ceil(size / self.batch)
        self.ramp = (steps if warmup else 0, steps * epochs if warmup and config.schedule == "cosine" else 0)
        self.step = 0  # of this phase: the learning rate's schedule
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)  # every phase starts from the best so far
        self.average = copy.deepcopy(self.model.state_dict())
        every = config.validate_every if network else 1
        for epoch in range(1, epochs + 1):
            self.report.epochs += 1
            loss = self._epoch(optimizer, steps)
            self.report.losses.append(loss)
            score = self._validate() if epoch % every == 0 or epoch == epochs else None
            if self.progress:
                self.progress({"epoch": self.report.epochs, "loss": loss, "validation_ndcg": score, "done": True})
            if not len(self.val.target):
                self.report.best_epoch = self.report.epochs  # nothing to validate on: the last epoch is kept
            elif self.report.epochs - self.report.best_epoch >= patience and not (network and level_with_best(
                    [v[:3] for v in self.validated], self.report.best_epoch, config.patience_within)):
                break
            if not network and epoch * size >= config.scalar_examples:
                break

    def _validate(self) -> float | None:
        """Validation NDCG@10 of the average of the recent steps, kept when it is the best so far."""
        if not len(self.val.target):
            return None
        trained = copy.deepcopy(self.model.state_dict())
        self.model.load_state_dict(self.average)  # validate (and keep) the average of the recent steps
        grid = [(self.model.popularity_weight.item(), float(self.model.cold_quantile))]
        rows = validation_grid(self.model, self.val, self.interactions, self.vectors, self.prior, grid)[0]  # (V,)
        score = float(rows.mean())
        if score > self.best:
            self.keep(score, self.report.epochs)
        self.validated.append((self.report.epochs, self.attention, rows, copy.deepcopy(self.average)))
        self.model.load_state_dict(trained)
        self.report.validation.append(score)
        self.report.validated_epochs.append(self.report.epochs)
        return score

    def _epoch(self, optimizer: AdamW, steps: int) -> float:
        model, config = self.model, self.config
        model.train()
        order = torch.randperm(len(self.target), generator=self.generator)[:config.epoch_examples]  # a sample, if big
        total = 0.0
        for step in range(steps):
            batch = self._prepare(order[step * self.batch:(step + 1) * self.batch])
            prior = own = None
            if batch.prior is not None:
                prior, own = model.popularity_weight * batch.prior, model.popularity_weight * batch.own  # (B, K), (B,)
            with torch.autocast("cpu", torch.bfloat16, enabled=self.report.precision == "bfloat16"):
                projected = None if batch.distinct is None else model.inp(batch.distinct)[batch.slot]  # (B, T, W)
                users = model(*batch.inputs, projected=projected, attention=self.attention)  # (B, D)
                loss = contrastive_loss(users, batch.target, batch.weight, self.vectors, self.log_q,
                                        self.loss_config, self.generator, batch.seen, prior, batch.columns, own,
                                        batch.log_inclusion, self.low)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step(self.rate * learning_rate_factor(self.step, *self.ramp))
            self.step += 1
            with torch.no_grad():
                for name, value in model.state_dict().items():
                    self.average[name].lerp_(value, 1.0 - AVERAGE_DECAY)
            total += loss.item()
            if self.progress:
                self.progress({"epoch": self.report.epochs, "step": step + 1, "steps": steps, "loss": loss.item()})
        return total / steps

    def _prepare(self, idx: torch.Tensor) -> Batch:
        """The inputs of the step over the training examples `idx` (B,)."""
        return prepare(self.train.take(idx.numpy()), self.target[idx], self.weight[idx], self.interactions, self.low,
                       self.prior, self._columns, self.attention)

    def _columns(self, positives: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The products every row of a batch is scored against, and their log inclusion: all (None, None) or,
        for `shared` in a catalog larger than `whole_catalog` and `shared_negatives`, `shared_columns`."""
        N, K = len(self.vectors), self.config.shared_negatives
        if self.config.negatives != "shared" or max(K, self.config.whole_catalog) >= N:
            return None, None
        share = self.positive_share if self.config.shared_positives else None
        return shared_columns(N, K, positives, share, self.generator)

    def _latest_within_noise(self) -> None:
        """Move the kept weights to `latest_within_noise`'s epoch (a network-phase best only)."""
        self.report.top_epoch = self.report.best_epoch
        chosen = latest_within_noise([v[:3] for v in self.validated], self.report.best_epoch, self.config.keep_within)
        if chosen is not None:
            epoch, _, rows, state = self.validated[chosen]
            self.best, self.best_state, self.report.best_epoch = float(rows.mean()), state, epoch

    def finish(self) -> TrainReport:
        if self.best_state is not None:
            self._latest_within_noise()
            self.model.load_state_dict(self.best_state)
            self.report.best_validation_ndcg = self.best
        self.model.eval()
        self.report.popularity_weight = self.model.popularity_weight.item()
        self.report.cold_quantile = float(self.model.cold_quantile)
        return self.report


AVERAGE_DECAY = 0.98  # per step: weights are validated and kept as an exponential average (smooths small data)
SCALAR_PATIENCE = 2  # the few scalars converge smoothly: the first phase stops sooner than the network's


def train_tower(
    interactions: Interactions, item_vectors: np.ndarray, tower: TowerConfig, config: TrainingConfig,
    event_weights: Mapping[str, float], popularity_half_life_hours: float | None = None,
    progress: Progress | None = None, window_hours: float = 0.0,
) -> tuple[UserTower, TrainReport]:
    """Train a user tower on `interactions` against the frozen product vectors (N, D); CPU, seeded.
    `window_hours` > 0: example histories hold only that recent events, as serving's window (0: none).

    `popularity_half_life_hours` is the feed's: the popularity prior is learned (when config.popularity_prior)
    over popularity defined exactly as the feed ranks with it; None leaves the prior out (weight 0).

    `progress` receives {"epoch", "step", "steps", "loss"} after every batch and
    {"epoch", "loss", "validation_ndcg", "done": True} after every epoch. With tqdm:
    `bar = tqdm(); train_tower(..., progress=lambda e: bar.update(1) if "step" in e else None)`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # process-wide while training; restored after
    try:
        return _train(interactions, item_vectors, tower, config, event_weights, popularity_half_life_hours, progress,
                      window_hours)
    finally:
        torch.set_num_threads(threads)


def _train(
    interactions: Interactions, item_vectors: np.ndarray, tower: TowerConfig, config: TrainingConfig,
    event_weights: Mapping[str, float], popularity_half_life_hours: float | None, progress: Progress | None,
    window_hours: float,
) -> tuple[UserTower, TrainReport]:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    vectors = torch.as_tensor(np.require(item_vectors, np.float32, ["W"]))  # (N, D); copied only if read-only

    # examples: history -> next new product, the most recent `max_examples`, some customers' last held out
    examples = make_examples(interactions, tower.history, window_hours)
    if not len(examples.target):
        raise InvalidInput("no training examples: every customer needs at least two interactions with "
                           "different products", field="interactions")
    train, val = split_validation(examples, interactions, config.validation_fraction, rng, config.validation_examples)
    if len(train.target) > config.max_examples:
        train = train.take(np.argsort(interactions.ts[train.target], kind="stable")[-config.max_examples:])
    kind_weight = np.array([event_weights[name] for name in EVENT_NAMES], dtype=np.float32)
    if not config.event_weighted_loss:
        kind_weight = np.ones_like(kind_weight)
    weight = torch.as_tensor(kind_weight[interactions.kind[train.target]])  # (M,)
    target = torch.as_tensor(interactions.item[train.target])  # (M,)
    freq = np.bincount(interactions.item[train.target], minlength=len(vectors)) + 1.0  # smoothed
    log_q = torch.as_tensor(np.log(freq / freq.sum()), dtype=torch.float32)  # (N,) per positive drawn

    prior = None
    if config.popularity_prior and popularity_half_life_hours is not None:
        source = MomentPrior if config.prior_as_of == "moment" else PopularityPrior
        prior = source(interactions, len(vectors), event_weights, popularity_half_life_hours)
    model = UserTower(tower, vectors.shape[1])
    with torch.no_grad():  # start exactly at `mean_vector`: the residual mean weighs kinds like the event weights
        model.kind_bias.copy_(torch.log(torch.as_tensor([event_weights[n] for n in EVENT_NAMES])))
    model.popularity_weight.requires_grad_(prior is not None)
    run = _Run(model, train, val, interactions, vectors, prior, target, weight, log_q, config, generator, progress)
    run.report.examples, run.report.validation_examples = len(target), len(val.target)
    run.report.prior_half_life_hours = popularity_half_life_hours if prior is not None else None
    if len(val.target):  # epoch 0: the initial tower (mean_vector, plus the best prior weight) is a candidate too
        run.keep(choose_prior(model, val, interactions, vectors, prior, config.cold_start_prior), 0)
        run.report.validation.append(run.best)
        run.report.validated_epochs.append(0)
    # 1: only the few scalars (recency, kind weights, prior): robust on little data; 2: the whole network
    scalars = [model.log_half_life, model.kind_bias]
    prior_group, rate = {"params": [model.popularity_weight], "weight_decay": 0.0}, config.scalar_learning_rate
    # the prior's rate in cosine units, so its logit-space step matches the other scalars' at the phase's temperature
    scalar_only = AdamW([{"params": scalars}, {**prior_group, "lr": rate * config.scalar_temperature}], lr=rate,
                        weight_decay=0.0)
    run.phase(scalar_only, patience=min(config.patience, SCALAR_PATIENCE), network=False)
    run.report.scalar_epochs = run.report.epochs
    network = [p for n, p in model.named_parameters() if n not in ("log_half_life", "kind_bias", "popularity_weight")]
    run.phase(AdamW([
        {"params": network},
        {"params": scalars, "lr": config.scalar_learning_rate, "weight_decay": 0.0},
        {**prior_group, "lr": rate * config.temperature},
    ], lr=config.learning_rate, weight_decay=config.weight_decay), patience=config.patience, network=True)
    report = run.finish()
    if len(val.target) and config.cold_start_prior and prior is not None:  # the cold quantile again, for the kept
        report.best_validation_ndcg = choose_prior(model, val, interactions, vectors, prior, True,  # weights
                                                   [model.popularity_weight.item()])
        report.cold_quantile = float(model.cold_quantile)
    if len(val.target) and config.cold_slots:
        report.cold_shares = choose_cold_share(model, val, interactions, vectors, prior, rule=config.cold_share_rule,
                                               minimum=config.cold_share_min)
        report.cold_share = report.cold_shares[0][0]  # best_validation_ndcg stays the tower's own order's
    report.train_seconds = time.perf_counter() - started
    return model, report
