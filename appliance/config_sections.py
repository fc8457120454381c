"""The typed sections of the configuration, one dataclass per table of config.toml (appliance/config.py loads them).

Every key lives in config.toml with a comment; these dataclasses only give it a type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    data_dir: str
    load_demo: bool
    admin_key: str
    torch_threads: int
    gc_full_pass_threshold: int
    switch_interval_ms: float


@dataclass(frozen=True)
class EncoderConfig:
    model: str
    dim: int
    batch_size: int
    background_batch: int


@dataclass(frozen=True)
class CatalogConfig:
    tier_thresholds: tuple[float, ...]
    max_bulk: int
    import_chunk: int


@dataclass(frozen=True)
class EventsConfig:
    max_batch: int
    max_future_seconds: float
    dedupe_window_hours: float
    weights: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedConfig:
    per_page: int
    max_per_page: int
    popularity_half_life_hours: float
    popularity_refresh_seconds: float
    similar_k: int
    personal_share: float
    new_share: float
    new_arrival_days: float
    personal_depth: int
    personal_first_depth: int
    personal_first_ef: int
    candidate_cache: int
    exclude_purchased: bool
    snapshot_seconds: float
    snapshot_max: int
    snapshot_depth: int
    snapshot_orders: int
    page_cache: int
    prepare_window_seconds: float


@dataclass(frozen=True)
class WidgetsConfig:
    k: int
    max_k: int
    window_days: float
    session_gap_minutes: float
    max_basket: int
    min_support: int
    depth: int
    trending_recent_hours: float
    trending_baseline_days: float
    trending_min_shoppers: int
    related_behaviour_weight: float
    max_in_row: int
    diversity_by: str
    refresh_seconds: float
    recently_viewed_size: int  # products remembered per shopper (the most a recently-viewed answer holds)
    recently_viewed_shoppers: int  # shoppers whose views are kept in memory
    cache_entries: int  # finished answers (and products' neighbour lists) kept in memory
    neighbour_lists: int  # products whose nearest products by vector are computed ahead (most popular first)


@dataclass(frozen=True)
class RealtimeConfig:
    history_window_hours: float  # 0: no window (the last tower.history interactions, however old)
    visibility_timeout_seconds: float
    max_receive_count: int
    receive_wait_seconds: float
    consumer_batch: int
    consumer_backoff_max_seconds: float
    user_index_sync_seconds: float
    dead_letter_max: int  # dead letters kept; the oldest are dropped (and counted) beyond it
    dead_letter_retention_days: float


@dataclass(frozen=True)
class JobsConfig:
    enabled: bool
    retrain: str
    prune: str
    popularity: str
    reindex: str
    sync: str
    widgets: str
    retrain_window_days: float
    retention_days: float  # 0: raw events are kept forever
    misfire_grace_seconds: float
    keep_models: int  # newest checkpoints kept by retrain (the serving one is always kept)


@dataclass(frozen=True)
class IndexConfig:
    space: str
    m: int
    ef_construction: int
    ef_search: int


@dataclass(frozen=True)
class TowerConfig:
    history: int
    heads: int
    width: int
    layers: int
    dropout: float
    recency_half_life_hours: float


@dataclass(frozen=True)
class TrainingConfig:
    seed: int
    threads: int  # torch threads of a retrain inside the server (its other threads serve requests)
    offline_threads: int  # ... of `appliance train` / `appliance jobs run retrain`: a process of its own
    epochs: int
    batch_size: int  # of the network phase
    scalar_batch_size: int  # of the first phase (only the scalars learn)
    learning_rate: float
    scalar_learning_rate: float
    weight_decay: float
    negatives: str
    sampled_negatives: int
    shared_negatives: int
    whole_catalog: int  # "shared": a catalog of at most this many products (or shared_negatives) is scored whole
    shared_positives: bool  # the batch's positives join the shared negatives (popularity-drawn, logQ-corrected)
    precision: str
    temperature: float  # of the softmax in the network phase
    scalar_temperature: float  # ... in the first phase (only the scalars learn)
    patience: int
    patience_within: float  # standard errors: the network phase's patience runs out only below the best by more
    validate_every: int  # epochs of the network phase between validations (and after its last)
    keep_within: float  # standard errors: the latest network epoch this close to a network-phase best is kept
    min_network_steps: int  # below these steps in all, the network phase shrinks its batches and adds epochs
    scalar_examples: int  # the first phase ends after the epoch in which it has seen this many examples
    schedule: str  # the network phase's learning rate after its warm-up epoch: "constant" or "cosine" (0 at `epochs`)
    validation_fraction: float
    validation_examples: int
    max_examples: int
    epoch_examples: int
    event_weighted_loss: bool
    popularity_prior: bool  # learn popularity_weight (the tower's popularity prior); false keeps it 0
    prior_as_of: str  # "moment": popularity as of each example's time; "end": at the end of the training data
    prior_half_life_hours: float  # the prior's popularity decay (the feed's list keeps feed.popularity_half_life_hours)
    cold_start_prior: bool  # choose where products without events rank in the prior (appliance.prior); false: at 0
    cold_slots: bool  # choose on validation a share of the list for products without events (ranking.cold_slots)
    cold_share_rule: str  # how: "room" (the largest share within the tolerance) or "cold" (the best on cold positives)
    cold_share_min: float  # never a smaller share than this (a shop that wants new products shown)


@dataclass(frozen=True)
class EvaluationConfig:
    ks: tuple[int, ...]
    holdout: int


@dataclass(frozen=True)
class ElasticConfig:
    """Optional Elasticsearch sync (storage/elastic.py); nothing imports the client while disabled."""

    enabled: bool
    url: str
    product_index: str
    user_index: str
    vector_field: str
    user_vector_field: str
    api_key: str  # "" = none; wins over username/password
    username: str  # "" = no basic auth
    password: str
    verify_certs: bool
    ca_certs: str  # "" = the system's trust store
    timeout_seconds: float
    batch_size: int
    max_retries: int
    backoff_seconds: float
    backoff_max_seconds: float
    knn_num_candidates: int


@dataclass(frozen=True)
class QueueConfig:
    """Where event messages travel: the in-process DuckDB queue, or SQS (jobs/sqs.py) fed by an outbox."""

    backend: str  # "in-process" | "sqs"
    sqs_queue_url: str
    sqs_endpoint_url: str  # "" = AWS's own endpoint
    sqs_region: str  # "" = the standard AWS environment
    sqs_access_key_id: str  # "" = the standard AWS credential chain
    sqs_secret_access_key: str = field(repr=False)
    sqs_timeout_seconds: float
    outbox_batch: int
    outbox_backoff_seconds: float
    outbox_backoff_max_seconds: float


@dataclass(frozen=True)
class AnalyticsConfig:
    impressions: bool  # record what each feed showed (off: responses still carry a recommendation id)
    flush_seconds: float
    buffer_max: int
    attribution_window_hours: float


@dataclass(frozen=True)
class LoggingConfig:
    format: str  # "text" or "json"
    level: str


@dataclass(frozen=True)
class SecurityConfig:
    """Keys and scopes, browser safety and limits (web/access.py, web/browser.py, web/limits.py)."""

    public_keys: tuple[str, ...]
    server_keys: tuple[str, ...]
    admin_keys: tuple[str, ...]
    allowed_hosts: tuple[str, ...]  # beyond the loopback names and server.host; "*" = any
    cors_origins: tuple[str, ...]
    cors_max_age_seconds: int
    public_rate: float  # requests per second (0: no limit) and bucket size, per scope
    public_burst: int
    server_rate: float
    server_burst: int
    admin_rate: float
    admin_burst: int
    anonymous_rate: float  # per client address, for requests without a key
    anonymous_burst: int
    max_body_bytes: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    keep_alive_seconds: int
    max_connections: int  # 0: no limit

    @property
    def keyed(self) -> bool:
        """Keys are required once a public or server key exists (admin routes always need an admin key)."""
        return bool(self.public_keys or self.server_keys)


@dataclass(frozen=True)
class DemoConfig:
    seed: int
    products: int
    customers: int
    days: int
    train: bool  # run the retrain job once the loaded demo is embedded, so it serves a trained tower early
