"""Keys and scopes over real HTTP: the (key, route) -> allowed table for every route, rotation, loopback mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.errors import InvalidInput
from tests.helpers import LOCAL, wait_until
from web.app import create_app

KEYS = {
    "public": ["pk_storefront_2026a", "pk_storefront_2026b"],
    "server": ["sk_backend_2026a_xyz", "sk_backend_2026b_xyz"],
    "admin": ["ak_operator_2026a_xyz", "ak_operator_2026b_xyz"],
}
RANK = {"open": 0, "public": 1, "server": 2, "admin": 3}

# The contract, written out by hand: the least scope each route needs.
ROUTES = {
    ("GET", "/products/{product_id}"): "public",
    ("GET", "/products/{product_id}/similar"): "public",
    ("GET", "/customers/{customer_id}/feed"): "public",
    ("POST", "/events"): "public",
    ("PUT", "/products/{product_id}"): "server",
    ("POST", "/products"): "server",
    ("DELETE", "/products/{product_id}"): "server",
    ("DELETE", "/customers/{customer_id}"): "server",
    ("POST", "/customers/{customer_id}/merge"): "server",
    ("GET", "/queue"): "server",
    ("GET", "/model"): "server",
    ("GET", "/jobs"): "server",
    ("GET", "/sync"): "server",
    ("GET", "/queue/dead-letter"): "server",
    ("POST", "/queue/dead-letter/redrive"): "admin",
    ("POST", "/jobs/{name}/run"): "admin",
    ("GET", "/analytics"): "admin",
    ("GET", "/metrics"): "server",
    ("GET", "/products/{product_id}/bought-together"): "public",
    ("GET", "/products/{product_id}/related"): "public",
    ("GET", "/trending"): "public",
    ("GET", "/trending/categories"): "public",
    ("GET", "/customers/{customer_id}/recently-viewed"): "public",
    ("POST", "/recommendations/bought-together"): "public",
    ("POST", "/recommendations"): "public",
    ("GET", "/rules"): "admin",
    ("POST", "/rules"): "admin",
    ("GET", "/rules/{rule_id}"): "admin",
    ("PUT", "/rules/{rule_id}"): "admin",
    ("DELETE", "/rules/{rule_id}"): "admin",
    ("GET", "/health/live"): "open",
    ("GET", "/health/ready"): "open",
    ("GET", "/static/swagger-ui/{file_path}"): "open",  # the docs page's scripts, shipped in the package
    ("HEAD", "/static/swagger-ui/{file_path}"): "open",
    ("GET", "/dashboard"): "admin",  # the operator's pages; a browser is asked for the key (HTTP Basic)
    ("GET", "/dashboard/models"): "admin",
    ("GET", "/dashboard/jobs"): "admin",
    ("GET", "/dashboard/customer"): "admin",
    ("GET", "/dashboard/product"): "admin",
    ("GET", "/dashboard/static/{file_path}"): "open",  # the dashboard's stylesheet and icon
    ("HEAD", "/dashboard/static/{file_path}"): "open",
}
PRODUCT = {"name": "Trail runner", "merchant": "Acme", "category_path": ["Shoes", "Running"], "color": "Red",
           "price": 90.0}
BODIES = {
    ("PUT", "/products/{product_id}"): PRODUCT,
    ("POST", "/products"): [{"product_id": 2, **PRODUCT}],
    ("POST", "/events"): {"customer_id": 1, "product_id": 1, "event_name": "product_viewed"},
    ("POST", "/customers/{customer_id}/merge"): {"anonymous_id": "anon-1"},
    ("POST", "/recommendations/bought-together"): {"product_ids": ["1"]},
    ("POST", "/recommendations"): {"requests": [{"model": "trending"}]},
    ("POST", "/rules"): {"kind": "hide", "brand": "Acme"},
    ("PUT", "/rules/{rule_id}"): {"kind": "hide", "brand": "Acme"},
}
PARAMS = {"product_id": "1", "customer_id": "1", "name": "popularity", "file_path": "swagger-ui.css", "rule_id": "1"}


def _url(path: str) -> str:
    for name, value in PARAMS.items():
        path = path.replace("{" + name + "}", value)
    return path


def keyed_config(tmp_path, **security):
    return load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
        "jobs": {"enabled": False},
        "security": {"public_keys": KEYS["public"], "server_keys": KEYS["server"], "admin_keys": KEYS["admin"],
                     "public_rate": 0.0, "anonymous_rate": 0.0, **security},
    })


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, encoder) -> Iterator[TestClient]:
    app = create_app(keyed_config(tmp_path_factory.mktemp("keyed")), encoder=encoder)
    with TestClient(app, base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        yield client


def test_the_table_names_every_route_of_the_app(keyed: TestClient) -> None:
    served = {
        (method, route.path_format)
        for route in keyed.app.routes if isinstance(route, HTTPRoute) and not route.path_format.startswith("/schema")
        for handler in route.route_handlers for method in handler.http_methods if method != "OPTIONS"
    }
    assert served == set(ROUTES)


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]):
    body = BODIES.get((method, path))
    return client.request(method, _url(path), json=body, headers=headers)


@pytest.mark.parametrize("who", ["nobody", "unknown", "public", "server", "admin"])
@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_key_route_table(keyed: TestClient, method: str, path: str, who: str) -> None:
    needed = ROUTES[(method, path)]
    headers = {} if who == "nobody" else {"Authorization": f"Bearer {KEYS.get(who, ['not-a-key-at-all'])[0]}"}
    answer = _call(keyed, method, path, headers)
    if needed == "open" or (who in RANK and RANK[who] >= RANK[needed]):
        assert answer.status_code not in (401, 403), answer.text
        return
    expected = 403 if who in RANK else 401
    assert answer.status_code == expected, answer.text
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == expected
    unknown = who == "unknown" and "not a configured key" in problem["detail"]
    assert f"the {needed} scope" in problem["detail"] or unknown
    if expected == 401:
        challenge = "Basic" if path.startswith("/dashboard") else "Bearer"  # a page asks the browser's dialog
        assert answer.headers["www-authenticate"].startswith(challenge)


@pytest.mark.parametrize("scope", ["public", "server", "admin"])
@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "X-Admin-Key"])
def test_both_keys_of_a_scope_work_in_every_header(keyed: TestClient, scope: str, header: str) -> None:
    method, path, ok = {"public": ("GET", "/customers/1/feed", 200), "server": ("GET", "/model", 200),
                        "admin": ("POST", "/jobs/nope/run", 404)}[scope]  # past the guard: no such job
    for key in KEYS[scope]:
        value = f"Bearer {key}" if header == "Authorization" else key
        assert keyed.request(method, path, headers={header: value}).status_code == ok
    assert keyed.request(method, path, headers={header: KEYS[scope][0][:-1]}).status_code == 401  # a char short


def test_the_openapi_document_names_the_scope_of_each_operation(keyed: TestClient) -> None:
    doc = keyed.get("/schema/openapi.json").json()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for (method, path), needed in ROUTES.items():
        if path.startswith(("/static/", "/dashboard")):  # files and HTML pages, not API operations: not documented
            assert path not in doc["paths"]
            continue
        operation = doc["paths"][path][method.lower()]
        if needed == "open":
            assert "security" not in operation
        else:
            assert operation["security"] == [{"bearer": [needed]}, {"apiKey": [needed]}]


@pytest.fixture(scope="module")
def loopback(tmp_path_factory, encoder) -> Iterator[TestClient]:
    """No public or server key: loopback mode (the legacy server.admin_key is the only key)."""
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path_factory.mktemp("open") / "data"), "load_demo": False,
                   "admin_key": "legacy-admin-key-1"},
        "jobs": {"enabled": False},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        yield client


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_without_keys_loopback_gets_all_but_admin(loopback: TestClient, method: str, path: str) -> None:
    answer = _call(loopback, method, path, {})
    if ROUTES[(method, path)] == "admin":
        assert answer.status_code == 401, answer.text
        assert _call(loopback, method, path, {"X-Admin-Key": "legacy-admin-key-1"}).status_code not in (401, 403)
    else:
        assert answer.status_code not in (401, 403), answer.text


def test_admin_routes_name_the_setting_when_no_admin_key_exists(client: TestClient) -> None:
    answer = client.post("/queue/dead-letter/redrive")
    assert answer.status_code == 403 and "security.admin_keys" in answer.json()["detail"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "shop.internal"])
def test_no_key_and_a_non_loopback_host_refuses_to_start(tmp_path, host: str) -> None:
    config = load_config(overrides={"server": {"host": host, "data_dir": str(tmp_path)}})
    with pytest.raises(InvalidInput) as err:
        create_app(config)
    assert err.value.field == "security.server_keys" and "security.server_keys" in str(err.value)
    keyed = load_config(overrides={"server": {"host": host, "data_dir": str(tmp_path)},
                                   "security": {"server_keys": KEYS["server"]}})
    assert create_app(keyed) is not None  # with a server key it may serve there


@pytest.mark.parametrize(
    ("security", "field"),
    [({"server_keys": ["same-key-000000"], "admin_keys": ["same-key-000000"]}, "security.admin_keys"),
     ({"public_keys": ["has space in it"]}, "security.public_keys"),
     ({"public_rate": -1.0}, "security.public_rate")],
)
def test_bad_security_settings_are_refused_naming_the_key(security: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        load_config(env={}, overrides={"security": security})
    assert err.value.field == field


def test_keys_come_from_the_environment_as_a_comma_separated_list() -> None:
    config = load_config(env={"APPLIANCE_SECURITY__SERVER_KEYS": "sk-one-0000001,sk-two-0000002"})
    assert config.security.server_keys == ("sk-one-0000001", "sk-two-0000002") and config.security.keyed
