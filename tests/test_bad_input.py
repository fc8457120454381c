"""Input that used to answer 500 or be accepted wrongly: each is a 4xx problem body naming the field, and
changes nothing."""

from __future__ import annotations

import pytest

EVENT = b'{"customer_id": 1, "product_id": 2, "event_name": "product_clicked"'
LONG = "x" * 129  # ids are 1-128 characters

CASES = [  # (method, path, body, status, field)
    ("POST", "/events", EVENT + b', "x": "\xff\xfe"}', 400, "$"),  # not UTF-8
    ("POST", "/events", b"[" * 1000 + b"]" * 1000, 400, "$"),  # nested ~1,000 deep
    ("POST", "/events", b'{"a":' * 1000 + b"1" + b"}" * 1000, 400, "$"),
    ("POST", "/events", b'{"customer_id": 1,', 400, "$"),  # truncated
    ("POST", "/events", b"null", 400, "$"),
    ("POST", "/events", EVENT + b', "timestamp": "0001-01-01T00:00:00+01:00"}', 422, "timestamp"),
    ("POST", "/events", EVENT + b', "timestamp": "9999-12-31T23:59:59-01:00"}', 422, "timestamp"),
    ("POST", "/events", EVENT + b', "timestamp": "1969-12-31T23:59:59Z"}', 422, "timestamp"),
    ("POST", "/events", EVENT + b', "timestamp": "12"}', 400, "timestamp"),
    ("POST", "/events", EVENT + b', "timestamp": 12.0}', 400, "timestamp"),
    ("POST", "/events", EVENT + b', "timestamp": 1700000000}', 400, "timestamp"),
    ("POST", "/events", EVENT + b', "timestamp": "2026-02-30T00:00:00Z"}', 422, "timestamp"),
    ("POST", "/events", b"[" + EVENT + b"}, " + EVENT + b', "timestamp": "yesterday at noon"}]', 400, "[1].timestamp"),
    ("PUT", f"/products/{LONG}", b'{"name": "x", "category_path": ["a"]}', 400, "product_id"),
    ("DELETE", f"/products/{LONG}", b"", 400, "product_id"),
    ("GET", "/products/a%20b", b"", 400, "product_id"),
    ("DELETE", "/customers/tab%09bed", b"", 400, "customer_id"),
    ("GET", f"/customers/{LONG}/feed", b"", 400, "customer_id"),
    ("POST", "/events", b'{"customer_id": 1.5, "product_id": 2, "event_name": "product_clicked"}', 400, "customer_id"),
    ("POST", "/events", b'{"customer_id": "a b", "product_id": 2, "event_name": "product_clicked"}', 400,
     "customer_id"),
    ("PUT", "/products/5", b'{"name": "   ", "category_path": ["a"]}', 400, "name"),
    ("PUT", "/products/5", b'{"name": "\\u0001\\u0002", "category_path": ["a"]}', 400, "name"),
    ("PUT", "/products/5", b'{"name": "Mug\\u0000", "category_path": ["a"]}', 400, "name"),
    ("PUT", "/products/5", b'{"name": "Mug", "category_path": ["\\t"]}', 400, "category_path[0]"),
    ("PUT", "/products/5", b'{"name": "Mug", "category_path": ["a"], "color": "\\u001b[31m"}', 400, "color"),
    ("PUT", "/products/5", b'{"name": "Mug", "category_path": ["a"], "created_at": "9999-01-01T00:00:00Z"}',
     422, "created_at"),
    ("PUT", "/products/5", b'{"name": "Mug", "category_path": ["a"], "created_at": 1700000000}', 400, "created_at"),
    ("POST", "/products", b'[{"product_id": 5, "name": "Mug", "category_path": ["a"], '
                          b'"created_at": "0001-01-01T00:00:00+01:00"}]', 422, "[0].created_at"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), CASES,
                         ids=[f"{c[0]} {c[1][:30]} {c[2][:40]!r}" for c in CASES])
def test_bad_input_is_a_4xx_problem_naming_the_field_and_changes_nothing(client, method, path, body, status, field):
    before = client.get("/health/ready").json()
    answer = client.request(method, path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["field"] == field and answer.json()["detail"]
    after = client.get("/health/ready")
    assert after.status_code == 200
    assert (after.json()["products"], after.json()["events"]) == (before["products"], before["events"])


def test_ids_beyond_int64_are_ids_like_any_other(client):
    huge = "99999999999999999999"
    assert client.put(f"/products/{huge}", json={"name": "Mug", "category_path": ["Home"]}).status_code == 201
    event = {"customer_id": 10**30, "product_id": int(huge), "event_name": "product_clicked"}
    assert client.post("/events", json=event).status_code == 202
    assert client.get(f"/customers/{10**30}/feed").status_code == 200
    assert client.delete(f"/customers/{10**30}").json()["events"] == 1
    assert client.delete(f"/products/{huge}").status_code == 204


def test_iso_timestamps_with_or_without_an_offset_are_accepted(client):
    for stamp in ("2026-01-01T10:00:00Z", "2026-01-01T10:00:00+02:00", "2026-01-01T10:00:00.5", "1970-01-01T00:00:00Z"):
        event = {"customer_id": 1, "product_id": 2, "event_name": "product_clicked", "timestamp": stamp}
        assert client.post("/events", json=event).status_code == 202, stamp


def test_the_openapi_schema_states_the_bounds_the_server_enforces(client):
    schema = client.get("/schema/openapi.json").json()
    event = schema["components"]["schemas"]["EventIn"]["properties"]
    assert event["timestamp"]["format"] == "date-time" and event["timestamp"]["pattern"]
    fields = schema["components"]["schemas"]["ProductFields"]["properties"]
    assert fields["name"]["pattern"] and fields["name"]["maxLength"] == 500
    assert fields["category_path"]["items"]["pattern"] == fields["name"]["pattern"]
    put = schema["paths"]["/products/{product_id}"]["put"]
    (pid,) = [p for p in put["parameters"] if p["name"] == "product_id"]
    assert pid["schema"]["maxLength"] == 128 and pid["schema"]["pattern"]
