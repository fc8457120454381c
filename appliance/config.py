"""Configuration: defaults from the shipped config.toml -> a shop's file -> APPLIANCE_* env vars -> validate.

Every key lives in config.toml with a comment; the dataclasses of appliance/config_sections.py only give it
a type (a new key: its line in config.toml, its field there, its row in README's configuration table).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_type_hints

from appliance.config_sections import (
    AnalyticsConfig,
    CatalogConfig,
    DemoConfig,
    ElasticConfig,
    EncoderConfig,
    EvaluationConfig,
    EventsConfig,
    FeedConfig,
    IndexConfig,
    JobsConfig,
    LoggingConfig,
    QueueConfig,
    RealtimeConfig,
    SecurityConfig,
    ServerConfig,
    TowerConfig,
    TrainingConfig,
    WidgetsConfig,
)
from appliance.errors import InvalidInput
from appliance.types import EVENT_NAMES

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "config.toml"
ENV_PREFIX = "APPLIANCE_"


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    encoder: EncoderConfig
    catalog: CatalogConfig
    events: EventsConfig
    feed: FeedConfig
    widgets: WidgetsConfig
    realtime: RealtimeConfig
    jobs: JobsConfig
    index: IndexConfig
    tower: TowerConfig
    training: TrainingConfig
    evaluation: EvaluationConfig
    queue: QueueConfig
    elasticsearch: ElasticConfig
    analytics: AnalyticsConfig
    logging: LoggingConfig
    security: SecurityConfig
    demo: DemoConfig

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config: shipped defaults, then `path` (or $APPLIANCE_CONFIG), then env vars, then `overrides`.

    `overrides` is a nested mapping like {"server": {"data_dir": "/tmp/x"}} (what tests and the CLI use).
    """
    env = os.environ if env is None else env
    data = _read(DEFAULT_FILE)
    shop_file = path or env.get(ENV_PREFIX + "CONFIG")
    if shop_file:
        _merge(data, _read(Path(shop_file)))
    _merge(data, _from_env(env))
    if overrides:
        _merge(data, overrides)
    config = _build(Config, data, "")
    _validate(config)
    return config


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise InvalidInput(f"config file not found: {path}", field="config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path} is not valid TOML: {exc}", field="config") from exc


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """APPLIANCE_SERVER__PORT=9000 -> {"server": {"port": 9000}}; deeper keys use more "__"."""
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InvalidInput(f"unknown config key(s) in [{where or 'top'}]: {sorted(unknown)}", field=where or None)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidInput(f"missing config key {key}", field=key)
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], key)
    return cls(**kwargs)


def _coerce(kind: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise InvalidInput(f"config [{key}] must be a table", field=key)
        return _build(kind, value, key)
    if kind is bool:
        if not isinstance(value, bool):
            raise InvalidInput(f"config {key} must be true or false, got {value!r}", field=key)
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"config {key} must be a number, got {value!r}", field=key)
        if kind is int and not float(value).is_integer():
            raise InvalidInput(f"config {key} must be a whole number, got {value!r}", field=key)
        return kind(value)
    if kind is str:
        return str(value)
    if getattr(kind, "__origin__", None) is tuple:
        if isinstance(value, str) and kind.__args__[0] is str:  # APPLIANCE_SECURITY__SERVER_KEYS=k1,k2
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise InvalidInput(f"config {key} must be a list", field=key)
        return tuple(_coerce(kind.__args__[0], v, key) for v in value)
    if isinstance(value, Mapping):  # weights: a table of numbers
        return MappingProxyType({k: _coerce(float, v, f"{key}.{k}") for k, v in value.items()})
    raise InvalidInput(f"config {key} has an unsupported value {value!r}", field=key)


def _validate(config: Config) -> None:
    tiers = config.catalog.tier_thresholds
    if len(tiers) != 3 or list(tiers) != sorted(tiers) or len(set(tiers)) != 3:
        raise InvalidInput("catalog.tier_thresholds must be 3 ascending prices", field="catalog.tier_thresholds")
    weights = config.events.weights
    if set(weights) != set(EVENT_NAMES):
        raise InvalidInput(
            f"events.weights must give exactly {list(EVENT_NAMES)}", field="events.weights"
        )
    if any(w <= 0 for w in weights.values()):
        raise InvalidInput("events.weights must all be positive", field="events.weights")
    positive = {
        "server.port": config.server.port,
        "server.torch_threads": config.server.torch_threads,
        "server.gc_full_pass_threshold": config.server.gc_full_pass_threshold,
        "server.switch_interval_ms": config.server.switch_interval_ms,
        "encoder.dim": config.encoder.dim,
        "encoder.batch_size": config.encoder.batch_size,
        "encoder.background_batch": config.encoder.background_batch,
        "catalog.max_bulk": config.catalog.max_bulk,
        "catalog.import_chunk": config.catalog.import_chunk,
        "events.max_batch": config.events.max_batch,
        "events.dedupe_window_hours": config.events.dedupe_window_hours,
        "feed.per_page": config.feed.per_page,
        "feed.max_per_page": config.feed.max_per_page,
        "feed.popularity_half_life_hours": config.feed.popularity_half_life_hours,
        "feed.similar_k": config.feed.similar_k,
        "feed.personal_depth": config.feed.personal_depth,
        "feed.personal_first_depth": config.feed.personal_first_depth,
        "feed.personal_first_ef": config.feed.personal_first_ef,
        "feed.candidate_cache": config.feed.candidate_cache,
        "feed.snapshot_max": config.feed.snapshot_max,
        "feed.snapshot_depth": config.feed.snapshot_depth,
        "feed.snapshot_orders": config.feed.snapshot_orders,
        "widgets.k": config.widgets.k,
        "widgets.max_k": config.widgets.max_k,
        "widgets.window_days": config.widgets.window_days,
        "widgets.max_basket": config.widgets.max_basket,
        "widgets.min_support": config.widgets.min_support,
        "widgets.depth": config.widgets.depth,
        "widgets.trending_recent_hours": config.widgets.trending_recent_hours,
        "widgets.trending_baseline_days": config.widgets.trending_baseline_days,
        "widgets.recently_viewed_size": config.widgets.recently_viewed_size,
        "widgets.recently_viewed_shoppers": config.widgets.recently_viewed_shoppers,
        "widgets.cache_entries": config.widgets.cache_entries,
        "realtime.max_receive_count": config.realtime.max_receive_count,
        "realtime.consumer_batch": config.realtime.consumer_batch,
        "realtime.consumer_backoff_max_seconds": config.realtime.consumer_backoff_max_seconds,
        "realtime.dead_letter_max": config.realtime.dead_letter_max,
        "realtime.dead_letter_retention_days": config.realtime.dead_letter_retention_days,
        "security.max_body_bytes": config.security.max_body_bytes,
        "security.header_timeout_seconds": config.security.header_timeout_seconds,
        "security.body_timeout_seconds": config.security.body_timeout_seconds,
        "security.keep_alive_seconds": config.security.keep_alive_seconds,
        "jobs.retrain_window_days": config.jobs.retrain_window_days,
        "index.m": config.index.m,
        "index.ef_construction": config.index.ef_construction,
        "index.ef_search": config.index.ef_search,
        "training.threads": config.training.threads,
        "training.offline_threads": config.training.offline_threads,
        "training.batch_size": config.training.batch_size,
        "training.scalar_batch_size": config.training.scalar_batch_size,
        "analytics.flush_seconds": config.analytics.flush_seconds,
        "analytics.buffer_max": config.analytics.buffer_max,
        "analytics.attribution_window_hours": config.analytics.attribution_window_hours,
        "training.prior_half_life_hours": config.training.prior_half_life_hours,
        "training.shared_negatives": config.training.shared_negatives,
        "training.whole_catalog": config.training.whole_catalog,
        "training.epoch_examples": config.training.epoch_examples,
        "training.validation_examples": config.training.validation_examples,
        "training.validate_every": config.training.validate_every,
        "training.scalar_examples": config.training.scalar_examples,
        "training.temperature": config.training.temperature,
        "training.scalar_temperature": config.training.scalar_temperature,
        "demo.products": config.demo.products,
        "demo.customers": config.demo.customers,
        "demo.days": config.demo.days,
    }
    for key, value in positive.items():
        if value <= 0:
            raise InvalidInput(f"config {key} must be positive, got {value}", field=key)
    for key, value in (("realtime.history_window_hours", config.realtime.history_window_hours),
                       ("jobs.retention_days", config.jobs.retention_days),
                       ("feed.page_cache", config.feed.page_cache),
                       ("widgets.neighbour_lists", config.widgets.neighbour_lists),
                       ("feed.prepare_window_seconds", config.feed.prepare_window_seconds),
                       ("training.min_network_steps", config.training.min_network_steps),
                       ("training.keep_within", config.training.keep_within),
                       ("training.patience_within", config.training.patience_within)):
        if value < 0:
            raise InvalidInput(f"config {key} must be 0 (off) or positive, got {value}", field=key)
    shares = (config.feed.personal_share, config.feed.new_share)
    if min(shares) < 0 or sum(shares) > 1:
        raise InvalidInput("feed.personal_share and feed.new_share must be >= 0 and sum to at most 1",
                           field="feed.personal_share")
    if config.feed.per_page > config.feed.max_per_page:
        raise InvalidInput("feed.per_page must not exceed feed.max_per_page", field="feed.per_page")
    if config.widgets.diversity_by not in ("brand", "subcategory"):
        raise InvalidInput("widgets.diversity_by must be brand or subcategory", field="widgets.diversity_by")
    if not 0.0 <= config.widgets.related_behaviour_weight <= 1.0:
        raise InvalidInput("widgets.related_behaviour_weight must be in 0..1", field="widgets.related_behaviour_weight")
    if config.training.negatives not in ("shared", "full", "sampled", "in_batch", "mixed"):
        raise InvalidInput("training.negatives must be shared, full, sampled, in_batch or mixed",
                           field="training.negatives")
    if config.training.precision not in ("auto", "float32", "bfloat16"):
        raise InvalidInput("training.precision must be auto, float32 or bfloat16", field="training.precision")
    if config.training.schedule not in ("constant", "cosine"):
        raise InvalidInput("training.schedule must be constant or cosine", field="training.schedule")
    if config.training.prior_as_of not in ("moment", "end"):
        raise InvalidInput("training.prior_as_of must be moment or end", field="training.prior_as_of")
    if config.training.cold_share_rule not in ("room", "cold"):
        raise InvalidInput("training.cold_share_rule must be room or cold", field="training.cold_share_rule")
    if not 0.0 <= config.training.cold_share_min <= 1.0:
        raise InvalidInput("training.cold_share_min must be in 0..1", field="training.cold_share_min")
    if config.tower.width % config.tower.heads:
        raise InvalidInput("tower.heads must divide tower.width", field="tower.heads")
    es = config.elasticsearch
    if es.batch_size <= 0 or es.knn_num_candidates <= 0 or es.timeout_seconds <= 0:
        raise InvalidInput("elasticsearch batch_size, knn_num_candidates and timeout_seconds must be positive",
                           field="elasticsearch")
    if es.max_retries < 0 or es.backoff_seconds < 0 or es.backoff_max_seconds < 0:
        raise InvalidInput("elasticsearch retries and backoffs must not be negative", field="elasticsearch")
    if es.enabled and not es.url:
        raise InvalidInput("elasticsearch.url is required when enabled", field="elasticsearch.url")
    _validate_queue(config.queue)
    if config.logging.format not in ("text", "json"):
        raise InvalidInput("logging.format must be text or json", field="logging.format")
    if config.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise InvalidInput("logging.level must be DEBUG, INFO, WARNING or ERROR", field="logging.level")
    if config.index.space not in ("cosine", "ip"):
        raise InvalidInput("index.space must be cosine or ip", field="index.space")
    _validate_security(config.security, config.server.admin_key)


def _validate_queue(queue: QueueConfig) -> None:
    if queue.backend not in ("in-process", "sqs"):
        raise InvalidInput('queue.backend must be "in-process" or "sqs"', field="queue.backend")
    if queue.backend == "sqs" and not queue.sqs_queue_url:
        raise InvalidInput("queue.sqs_queue_url is required for backend sqs", field="queue.sqs_queue_url")
    if not 1 <= queue.outbox_batch <= 10:
        raise InvalidInput("queue.outbox_batch must be within 1..10 (SQS batch limit)", field="queue.outbox_batch")
    if queue.sqs_timeout_seconds <= 0 or queue.outbox_backoff_seconds < 0 or queue.outbox_backoff_max_seconds < 0:
        raise InvalidInput("queue time-out must be positive and backoffs not negative", field="queue")


def _validate_security(security: SecurityConfig, admin_key: str) -> None:
    seen: set[str] = set()
    for scope in ("public", "server", "admin"):
        field = f"security.{scope}_keys"
        for key in getattr(security, f"{scope}_keys") + ((admin_key,) if scope == "admin" and admin_key else ()):
            if not key or not all(33 <= ord(c) <= 126 for c in key) or key in seen:
                raise InvalidInput(f"{field}: a key is printable ASCII without spaces, listed once (one scope)",
                                   field=field)
            seen.add(key)
    for name in ("public", "server", "admin", "anonymous"):
        if getattr(security, f"{name}_rate") < 0 or getattr(security, f"{name}_burst") < 1:
            raise InvalidInput(f"security.{name}_rate must be >= 0 and its burst >= 1", field=f"security.{name}_rate")
    if security.max_connections < 0 or security.cors_max_age_seconds < 0:
        raise InvalidInput("security.max_connections and cors_max_age_seconds must be >= 0",
                           field="security.max_connections")
