"""Train a user tower from DuckDB, evaluate it beside the baselines on one time split, promote only if better."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from appliance.baselines import TowerScorer, baseline_scorers, prior_popularity
from appliance.config import Config
from appliance.errors import InvalidInput, NotEnoughData
from appliance.evaluation import Split, evaluate, should_promote, test_targets, time_split
from appliance.interactions import Interactions
from appliance.tower import UserTower
from appliance.training import train_tower
from appliance.types import EVENT_INDEX
from storage.catalog import CatalogStore
from storage.events import EventStore
from storage.models import ModelMeta, ModelRegistry

log = logging.getLogger("appliance.training")


@dataclass(frozen=True)
class TrainingData:
    interactions: Interactions  # items index rows of `vectors`
    product_ids: np.ndarray  # (N,) product id of each row
    vectors: np.ndarray  # (N, D) product vectors


@dataclass(frozen=True)
class TrainOutcome:
    version: str
    promoted: bool
    reason: str
    evaluation: dict[str, Any]  # the `evaluate` table: candidate, serving (if any) and the baselines
    training: dict[str, Any]  # TrainReport.as_dict()


def load_training_data(events: EventStore, catalog: CatalogStore, since: datetime | None = None) -> TrainingData:
    """Events whose product has a vector, as Interactions over the rows of the product-vector matrix."""
    product_ids, vectors, _ = catalog.vectors()
    return interactions_of(events.columns(since), product_ids, vectors)


def interactions_of(columns: dict[str, np.ndarray], product_ids: np.ndarray, vectors: np.ndarray) -> TrainingData:
    pid = np.asarray(columns["product_id"], dtype=np.int64)
    row = np.minimum(np.searchsorted(product_ids, pid), max(len(product_ids) - 1, 0))
    known = product_ids[row] == pid if len(product_ids) else np.zeros(len(pid), bool)
    kinds = np.array([EVENT_INDEX[name] for name in columns["event_name"]], dtype=np.int64)
    interactions = Interactions.from_arrays(
        np.asarray(columns["customer_id"])[known], row[known], kinds[known], np.asarray(columns["ts"])[known],
        n_items=len(product_ids),
    )
    return TrainingData(interactions, product_ids, vectors)


def scorers_for(split: Split, data: TrainingData, config: Config) -> tuple[list, Any]:
    """The baselines every model is compared with, built from the training part only, and the training
    part's popularity that a tower's prior ranks with (`prior_popularity`)."""
    scorers = baseline_scorers(
        split.train, data.vectors, config.events.weights, config.tower.history,
        config.tower.recency_half_life_hours, config.feed.popularity_half_life_hours,
    )
    training = config.training
    popularity = prior_popularity(split.train, len(data.vectors), config.events.weights, training.prior_as_of,
                                  training.prior_half_life_hours)
    return scorers, popularity


def split_enough(data: TrainingData, config: Config, purpose: str, since: datetime | None = None) -> Split:
    """The time split, or NotEnoughData saying in one sentence why there is nothing to `purpose` with."""
    scope = f" since {since:%Y-%m-%d %H:%M}" if since else ""
    events, customers = len(data.interactions), len(np.unique(data.interactions.customer))
    if not events:
        raise NotEnoughData(f"not enough data to {purpose}: no events{scope} with an embedded product "
                            f"(import products and events first)")
    split = time_split(data.interactions, config.evaluation.holdout)
    if not len(test_targets(split, len(data.product_ids))[0]):
        raise NotEnoughData(
            f"not enough data to {purpose}: {events} events of {customers} customers{scope}, and none of them "
            f"interacted with a new product after an earlier one (at least one such customer is needed to test on)")
    return split


def train_and_decide(
    data: TrainingData, config: Config, registry: ModelRegistry, serving: UserTower | None,
    progress: Callable[[dict], None] | None = None, since: datetime | None = None,
) -> tuple[UserTower, TrainOutcome]:
    """Train on each customer's history, test on their last interactions; save the candidate; promote it
    (atomically) only if its NDCG@10 beats the serving model's and popularity's on this same split.
    Too little data raises NotEnoughData (`since`: the start of the data, named in its message)."""
    split = split_enough(data, config, "train", since)
    try:
        model, report = train_tower(
            split.train, data.vectors, config.tower, config.training, config.events.weights,
            config.training.prior_half_life_hours, progress, config.realtime.history_window_hours,
        )
    except InvalidInput as exc:
        if exc.field != "interactions":
            raise
        raise NotEnoughData(f"not enough data to train: {exc}") from None
    scorers, popularity = scorers_for(split, data, config)
    scorers.append(TowerScorer(model, split.train, data.vectors, popularity, "candidate"))
    if serving is not None:
        scorers.append(TowerScorer(serving, split.train, data.vectors, popularity, "serving"))
    table = evaluate(scorers, split, len(data.product_ids), config.evaluation)
    models = table["models"]
    promoted = should_promote(models["candidate"], models.get("serving"), models["popularity"])
    window = data.interactions.window() or (0.0, 0.0)
    meta = ModelMeta(
        encoder_model=config.encoder.model, data_first=window[0], data_last=window[1],
        metrics=models["candidate"], training=report.as_dict(),
    )
    version = registry.save_candidate(model, meta)
    if promoted:
        registry.promote(version)
        reason = "its NDCG@10 beats " + ("the serving model and " if serving is not None else "") + "popularity"
    else:
        registry.reject(version)
        reason = "its NDCG@10 does not beat " + ("the serving model or " if serving is not None else "") + "popularity"
    log.info("model %s %s: %s", version, "promoted" if promoted else "rejected", reason)
    return model, TrainOutcome(version, promoted, reason, table, report.as_dict())


def evaluate_serving(data: TrainingData, config: Config, serving: UserTower | None) -> dict[str, Any]:
    """The evaluation table of the baselines and the serving model (if any) on the current data."""
    split = split_enough(data, config, "evaluate")
    scorers, popularity = scorers_for(split, data, config)
    if serving is not None:
        scorers.append(TowerScorer(serving, split.train, data.vectors, popularity, "serving"))
    return evaluate(scorers, split, len(data.product_ids), config.evaluation)
