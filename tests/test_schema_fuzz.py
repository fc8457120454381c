"""Schemathesis against the OpenAPI schema the app publishes, through the real app: requests generated from the
schema (valid and invalid), a fixed seed and a bounded budget; no server error, no answer that breaks the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from appliance.config import load_config
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app

BUDGET = 25  # examples per operation: about a minute in all on a 2-core machine
schema = schemathesis.openapi.from_dict(create_app(load_config()).openapi_schema.to_schema())


@pytest.fixture(scope="module")
def api(tmp_path_factory, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path_factory.mktemp("fuzz") / "data"), "load_demo": False, "admin_key": "k"},
        "jobs": {"enabled": False, "retrain": "off"}, "catalog": {"max_bulk": 20},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        yield client


@schema.parametrize()
@settings(max_examples=BUDGET, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_the_api_answers_every_generated_request_within_its_schema(case, api):
    if case.path == "/jobs/{name}/run":
        case.path_parameters = {"name": "popularity"}  # never a retrain inside the fuzz budget
    kwargs = case.as_transport_kwargs(base_url="http://testserver.local")
    headers = {**(kwargs.get("headers") or {}), "X-Admin-Key": "k"}  # the admin endpoints are fuzzed too
    response = api.request(kwargs.pop("method"), kwargs.pop("url"), headers=headers,
                           params=kwargs.get("params"), content=kwargs.get("data") or kwargs.get("content"),
                           json=kwargs.get("json"))
    print("FUZZ", case.method, case.path, case.path_parameters, response.status_code, response.text[:150])
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
