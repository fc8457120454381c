"""/metrics in the Prometheus text format, parsed with prometheus_client's own parser; values move with real work."""

from __future__ import annotations

from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import small_catalog, wait_embedded, wait_until

FEED = "/customers/{customer_id}/feed"


def scrape(client: TestClient) -> dict[str, dict[tuple, float]]:
    """sample name -> {sorted label items: value}"""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_move_after_real_requests(client: TestClient) -> None:
    client.post("/products", json=small_catalog())
    wait_embedded(client)
    before = scrape(client)
    for customer in (3, 4, 5):
        assert client.get(f"/customers/{customer}/feed").status_code == 200
    events = [{"customer_id": 3, "product_id": 1, "event_name": "product_clicked"},
              {"customer_id": 3, "product_id": 2, "event_name": "product_clicked"},
              {"customer_id": 4, "product_id": 2, "event_name": "product_purchased"}]
    assert client.post("/events", json=events).status_code == 202
    assert client.get("/no/such/page").status_code == 404
    services = client.app.state.services
    wait_until(lambda: services.consumer.processed >= 3, what="the consumer")
    services.jobs.run("popularity")
    services.impressions.flush()  # waits for a flush the writer thread has begun, then writes the rest
    after = scrape(client)

    feed = dict(method="GET", route=FEED, status="200")
    count = "appliance_request_duration_seconds_count"
    assert value(after, count, **feed) - value(before, count, **feed) == 3
    assert value(after, "appliance_request_duration_seconds_bucket", le="+Inf", **feed) == value(after, count, **feed)
    assert value(after, count, method="GET", route="unmatched", status="404") == 1
    assert not any("/customers/3" in dict(labels).get("route", "") for labels in after[count])  # templates, not ids
    ingested = "appliance_events_ingested_total"
    clicked = {"event_name": "product_clicked"}
    assert value(after, ingested, **clicked) - value(before, ingested, **clicked) == 2
    assert value(after, ingested, event_name="product_purchased") == 1
    assert value(after, "appliance_consumer_lag_seconds_count") >= 3
    assert value(after, "appliance_job_duration_seconds_count", job="popularity", outcome="ok") == 1
    assert value(after, "appliance_index_vectors", index="products") == 14
    assert value(after, "appliance_embedding_backlog_products") == 0
    assert value(after, "appliance_queue_messages", state="dead_lettered") == 0
    assert "appliance_queue_oldest_age_seconds" in after
    assert value(after, "appliance_model_info", version="mean", fallback="true") == 1
    assert "appliance_model_ndcg_at_10" not in after  # the fallback has no evaluation
    assert value(after, "appliance_impressions_written_total") == 3 * 14  # three feeds of the 14 products
    assert value(after, "appliance_impression_buffer_items") == 0


def test_the_serving_model_and_rate_limit_refusals_are_exposed_by_the_one_registry(client: TestClient) -> None:
    services = client.app.state.services
    services.metrics.rate_limited.labels("events").inc()  # what the rate limiter does when it refuses
    services.serving.set(None, "20261120T030000.000000Z", {"metrics": {"ndcg@10": 0.125}})
    samples = scrape(client)
    assert value(samples, "appliance_rate_limit_refusals_total", limit="events") == 1
    assert value(samples, "appliance_model_info", version="20261120T030000.000000Z", fallback="true") == 1
    assert value(samples, "appliance_model_ndcg_at_10") == 0.125
