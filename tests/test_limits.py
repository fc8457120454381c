"""Limits over real HTTP: rate limits per key and per address (429), the body cap (413), batch caps that the
OpenAPI schema states, and a dead-letter queue that stays bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.exceptions import TooManyRequestsException
from litestar.testing import TestClient

from appliance.config import load_config
from tests.helpers import LOCAL, wait_until
from web.app import create_app
from web.limits import RateLimiter

PUBLIC = ["pk_limits_storefront1", "pk_limits_storefront2"]
SERVER = "sk_limits_backend_0001"
EVENT = {"customer_id": 1, "product_id": 999, "event_name": "product_viewed"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path_factory.mktemp("limits") / "data"), "load_demo": False},
        "jobs": {"enabled": False},
        "events": {"max_batch": 3},
        "catalog": {"max_bulk": 2},
        "realtime": {"dead_letter_max": 2, "receive_wait_seconds": 0.1},
        "security": {"public_keys": PUBLIC, "server_keys": [SERVER], "public_rate": 0.5, "public_burst": 3,
                     "anonymous_rate": 0.5, "anonymous_burst": 40, "max_body_bytes": 4000},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        yield client


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_public_key_gets_its_burst_then_429_with_retry_after(limited: TestClient) -> None:
    statuses = [limited.get("/customers/1/feed", headers=_bearer(PUBLIC[0])).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    answer = limited.get("/customers/1/feed", headers=_bearer(PUBLIC[0]))
    assert answer.status_code == 429 and answer.headers["content-type"].startswith("application/problem+json")
    assert int(answer.headers["retry-after"]) >= 1 and "rate limit" in answer.json()["detail"]
    # another public key has its own bucket; the server key has no limit by default
    assert limited.get("/customers/1/feed", headers=_bearer(PUBLIC[1])).status_code == 200
    assert all(limited.get("/customers/1/feed", headers=_bearer(SERVER)).status_code == 200 for _ in range(20))


def test_the_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter({"public": (2.0, 2)}, clock=lambda: now[0])
    limiter.take("a", "public")
    limiter.take("a", "public")
    with pytest.raises(TooManyRequestsException) as err:
        limiter.take("a", "public")
    assert err.value.status_code == 429 and err.value.headers == {"Retry-After": "1"}
    limiter.take("b", "public")  # another client
    now[0] = 0.5  # one token back
    limiter.take("a", "public")
    with pytest.raises(TooManyRequestsException):
        limiter.take("a", "public")


def test_the_bucket_table_forgets_the_least_recent_client() -> None:
    limiter = RateLimiter({"x": (1.0, 1)}, clock=lambda: 0.0, max_buckets=2)
    for client in ("a", "b", "c"):
        limiter.take(client, "x")
    assert len(limiter._buckets) == 2 and ("x", "a") not in limiter._buckets


def test_a_body_over_the_cap_gets_413_and_changes_nothing(limited: TestClient) -> None:
    before = limited.get("/health/ready").json()["products"]
    product = {"product_id": 5, "name": "x" * 5000, "merchant": "m", "category_path": ["a"], "color": "r",
               "price": 1.0}
    answer = limited.post("/products", json=[product], headers=_bearer(SERVER))
    assert answer.status_code == 413 and answer.headers["content-type"].startswith("application/problem+json")
    assert limited.get("/health/ready").json()["products"] == before


@pytest.mark.parametrize(("path", "item", "cap"), [
    ("/events", EVENT, 3),
    ("/products", {"product_id": 7, "name": "n", "merchant": "m", "category_path": ["a"], "color": "r",
                   "price": 1.0}, 2),
])
def test_batch_caps_in_the_schema_are_what_the_server_enforces(limited: TestClient, path, item, cap) -> None:
    doc = limited.get("/schema/openapi.json").json()
    schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    arrays = [s for s in schema.get("oneOf", [schema]) if s.get("type") == "array"]
    assert [a["maxItems"] for a in arrays] == [cap]
    too_many = [dict(item, product_id=i) if "name" in item else item for i in range(1, cap + 2)]
    answer = limited.post(path, json=too_many, headers=_bearer(SERVER))
    assert answer.status_code == 422 and answer.json()["field"] == "$" and str(cap) in answer.json()["detail"]


def test_the_dead_letter_queue_keeps_its_cap_and_get_queue_counts_the_drops(limited: TestClient) -> None:
    # events of a product the catalog does not hold are dead-lettered by the consumer
    events = [dict(EVENT, customer_id=c) for c in (11, 12, 13)]
    for batch in (events, [dict(EVENT, customer_id=14)]):
        assert limited.post("/events", json=batch, headers=_bearer(SERVER)).status_code == 202
    wait_until(lambda: limited.get("/queue", headers=_bearer(SERVER)).json()["dead_letters_dropped"] == 2,
               what="dead letters dropped")
    queue = limited.get("/queue", headers=_bearer(SERVER)).json()
    assert queue["dead_lettered"] == 2 and queue["depth"] == 0


def test_requests_without_a_key_are_limited_per_address(limited: TestClient) -> None:
    """Last in this module: it empties the address's bucket that the tests above use for /health and /schema."""
    statuses = [limited.get("/health/live").status_code for _ in range(60)]
    assert statuses[0] == 200 and statuses.count(429) >= 60 - 41
    assert limited.get("/health/live", headers=_bearer(SERVER)).status_code == 429  # open routes ignore keys
    assert limited.get("/customers/1/feed", headers=_bearer(SERVER)).status_code == 200  # a key has its own
