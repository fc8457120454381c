"""The gauges /metrics reads at each scrape (split out of web/services.py, which builds the parts they read)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.sqs import SqsQueue

if TYPE_CHECKING:
    from web.services import Services


def watch_state(services: Services) -> None:
    """The gauges /metrics reads at each scrape: queue, embedding backlog, indexes, serving model, buffer."""
    m, queue = services.metrics, services.queue

    def queue_messages() -> dict[tuple[str, ...], float]:
        s = queue.stats()
        if s.unreachable:
            return {}
        return {("visible",): s.depth, ("in_flight",): s.in_flight, ("dead_lettered",): s.dead_lettered}

    def ndcg() -> float | None:
        meta = services.serving.get().meta or {}
        return (meta.get("metrics") or {}).get("ndcg@10")

    def model() -> dict[str, str]:
        serving = services.serving.get()
        return {"version": serving.version, "fallback": str(serving.model is None).lower()}

    m.gauge("queue_messages", "Event messages in the queue by state", queue_messages, ("state",))
    m.gauge("queue_oldest_age_seconds", "Age of the oldest live message (0 when empty)",
            lambda: queue.stats().oldest_age_seconds)
    m.gauge("queue_outbox_messages", "Event messages committed in DuckDB, not yet sent to SQS (0 in process)",
            lambda: queue.stats().outbox_backlog)
    m.gauge("queue_outage_seconds", "How long the consumer (and the SQS outbox sender) have been failing, 0 when not",
            lambda: {("consumer",): services.consumer.outage.seconds,
                     **({("outbox",): queue.sender.outage.seconds} if isinstance(queue, SqsQueue) else {})},
            ("part",))
    m.gauge("embedding_backlog_products", "Product lines still waiting for their vector",
            services.catalog.store.pending_count)
    m.gauge("index_vectors", "Vectors in each hnswlib index", lambda: {
        ("products",): len(services.index), ("users",): len(services.user_mirror.index)}, ("index",))
    m.gauge("model_ndcg_at_10", "NDCG@10 of the serving tower on its evaluation split (absent for the fallback)",
            ndcg)
    m.gauge("impression_buffer_items", "Impressions waiting in memory to be written",
            lambda: services.impressions.buffered)
    m.info("model", "The serving user tower (version) or the mean-vector fallback", model)
