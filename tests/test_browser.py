"""Browser safety over real HTTP: the Host allow-list, JSON-only writes, CORS for the storefront origins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from tests.helpers import LOCAL, wait_until
from web.app import create_app
from web.browser import host_allowed, host_name

EVENT = '{"customer_id": 1, "product_id": 2, "event_name": "product_clicked"}'
SHOP = "https://shop.example"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil"])
def test_a_foreign_host_gets_421_and_nothing_is_written(client: TestClient, host: str) -> None:
    before = client.get("/health/ready").json()["events"]
    for method, path, body in (("GET", "/queue", None), ("POST", "/events", EVENT)):
        answer = client.request(method, path, content=body,
                                headers={"Host": host, "Content-Type": "application/json"})
        assert answer.status_code == 421, answer.text
        assert answer.json()["field"] == "Host" and "security.allowed_hosts" in answer.json()["detail"]
    assert client.get("/health/ready").json()["events"] == before


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:80", "[::1]:8000"])
def test_loopback_names_are_allowed(client: TestClient, host: str) -> None:
    assert client.get("/queue", headers={"Host": host}).status_code == 200


def test_allowed_hosts_and_subdomain_wildcards() -> None:
    allowed = {"api.shop.example", "*.cdn.example"}
    assert host_allowed(host_name("API.shop.example:443"), allowed)
    assert host_allowed(host_name("eu.cdn.example"), allowed)
    assert not host_allowed(host_name("cdn.example.evil"), allowed)
    assert not host_allowed(host_name("shop.example"), allowed)
    assert host_allowed("anything", {"*"})


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx",
    "text/json",
])
def test_writes_accept_only_json(client: TestClient, content_type: str) -> None:
    before = client.get("/health/ready").json()["events"]
    for method, path in (("POST", "/events"), ("PUT", "/products/3"), ("POST", "/products")):
        answer = client.request(method, path, content=EVENT, headers={"Content-Type": content_type})
        assert answer.status_code == 415, answer.text
        problem = answer.json()
        assert problem["field"] == "Content-Type" and content_type in problem["detail"]
    assert client.request("POST", "/events", content=EVENT).status_code == 415  # a body without a type
    assert client.get("/health/ready").json()["events"] == before


def test_json_with_a_charset_is_json_and_bodiless_posts_need_no_type(client: TestClient) -> None:
    answer = client.post("/events", content=EVENT, headers={"Content-Type": "application/json; charset=utf-8"})
    assert answer.status_code == 202, answer.text
    assert client.post("/queue/dead-letter/redrive").status_code == 403  # past the content check: no admin key


@pytest.fixture(scope="module")
def storefront(tmp_path_factory, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path_factory.mktemp("cors") / "data"), "load_demo": False},
        "jobs": {"enabled": False},
        "security": {"cors_origins": [SHOP], "public_keys": ["pk_storefront_cors1"],
                     "allowed_hosts": ["api.shop.example"]},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        yield client


def test_cors_preflight_admits_the_storefront_and_its_key_header(storefront: TestClient) -> None:
    answer = storefront.options("/events", headers={
        "Origin": SHOP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == SHOP
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in answer.headers
    assert int(answer.headers["access-control-max-age"]) == 600


def test_cors_refuses_other_origins(storefront: TestClient) -> None:
    preflight = storefront.options("/events", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    simple = storefront.get("/customers/1/feed", headers={"Origin": "https://evil.example",
                                                         "Authorization": "Bearer pk_storefront_cors1"})
    assert "access-control-allow-origin" not in simple.headers


def test_a_storefront_request_gets_cors_headers_and_a_configured_host_is_served(storefront: TestClient) -> None:
    answer = storefront.get("/customers/1/feed", headers={
        "Origin": SHOP, "Authorization": "Bearer pk_storefront_cors1", "Host": "api.shop.example"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == SHOP and "Origin" in answer.headers["vary"]


def test_without_cors_origins_no_cors_headers(client: TestClient) -> None:
    answer = client.get("/queue", headers={"Origin": SHOP})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    preflight = client.options("/events", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
