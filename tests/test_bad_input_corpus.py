"""The bad-input corpus: hundreds of malformed requests over every operation (wrong types, bounds, encodings,
nesting, sizes). Each must be a 4xx application/problem+json naming the field, change no row, and leave the
server ready."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from tests.helpers import LOCAL, wait_until
from web.app import create_app

ADMIN = {"X-Admin-Key": "k"}
PRODUCT = {"name": "Mug", "merchant": "Acme", "category_path": ["Home", "Kitchen"], "color": "Red", "price": 10.0,
           "in_stock": True, "created_at": "2026-01-01T00:00:00Z"}
EVENT = {"customer_id": 1, "product_id": 1, "event_name": "product_clicked", "timestamp": "2026-01-01T00:00:00Z"}
WRONG_TYPES = [1.5, True, [], {}]
BAD_TEXT = [1, *WRONG_TYPES, "x" * 501, "   ", "\u0000", "a\u0007b", "tab\tbed", "\u009f", "\u2003"]
BAD_TIMES = [0, 1700000000, 12.0, "12", "2026-01-01", "9999-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
             "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-13-01T00:00:00Z",
             "2026-01-01T25:00:00Z", "2026-02-30T00:00:00Z", "x" * 41, "2026-01-01T00:00:00 UTC", *WRONG_TYPES]
BAD_IDS = ["", "a b", "a/b", "x" * 129, "\u0000", "tab\t", "\u2003", None, *WRONG_TYPES]
PRODUCT_FIELDS = {
    "name": [*BAD_TEXT, "", None],
    "merchant": [*BAD_TEXT, ""],
    "category_path": [["a"] * 6, "Home", [1], [""], ["  "], [None], ["a\u0000"], {}, [["a"]]],  # optional: [] or none
    "color": [1, *WRONG_TYPES, "x" * 101, "\u001b[31m", "\u0000"],
    "price": [-1, -0.01, 1e16, "ten", [], {}],
    "in_stock": ["maybe", 2, None, [], {}],
    "created_at": BAD_TIMES,
}
EVENT_FIELDS = {
    "customer_id": BAD_IDS,
    "product_id": BAD_IDS,
    "event_name": ["clicked", "", "PRODUCT_CLICKED", 1, None, *WRONG_TYPES],
    "timestamp": [*BAD_TIMES, "2099-01-01T00:00:00Z"],
}
MALFORMED = [  # (raw body, field)
    (b'{"name": "Mug\xff"}', "$"), (b"[" * 1000 + b"]" * 1000, "$"), (b'{"a":' * 1000 + b"1" + b"}" * 1000, "$"),
    (b'{"name": "Mug",', "$"), (b"null", "$"), (b'"text"', "$"), (b"12", "$"), (b"\xef\xbb\xbf{}", "$"),
]


def _body_cases(path: str, method: str, base: dict, fields: dict, listed: bool) -> Iterator[tuple]:
    prefix = "[0]." if listed else ""
    for name, values in fields.items():
        for value in values:
            body = {**base, name: value}
            yield method, path, [body] if listed else body, {}, f"{prefix}{name}"
        if name in ("name", "customer_id", "product_id", "event_name"):  # required
            body = {k: v for k, v in base.items() if k != name}
            yield method, path, [body] if listed else body, {}, f"{prefix}{name}"
    yield method, path, [{**base, "surprise": 1}] if listed else {**base, "surprise": 1}, {}, f"{prefix}surprise"
    for raw, field in MALFORMED:
        yield method, path, raw, {}, field


def corpus() -> Iterator[tuple]:
    """(method, path, body (dict/list: JSON, bytes: raw, None: no body), query, field named)."""
    yield from _body_cases("/products/1", "PUT", PRODUCT, PRODUCT_FIELDS, listed=False)
    yield from _body_cases("/products", "POST", {**PRODUCT, "product_id": 1},
                           {**PRODUCT_FIELDS, "product_id": BAD_IDS}, listed=True)
    yield from _body_cases("/events", "POST", EVENT, EVENT_FIELDS, listed=False)
    yield "POST", "/events", [EVENT, {**EVENT, "customer_id": "a b"}], {}, "[1].customer_id"
    yield "POST", "/events", [EVENT, {**EVENT, "timestamp": "9999-01-01T00:00:00Z"}], {}, "[1].timestamp"
    for path in ("/events", "/products"):
        yield "POST", path, [], {}, "$"
        yield "POST", path, [[EVENT]], {}, "[0]"
    yield "POST", "/events", [EVENT] * 6, {}, "$"  # max_batch is 5 here
    yield "POST", "/products", [{**PRODUCT, "product_id": i} for i in range(1, 7)], {}, "$"  # max_bulk is 5
    yield "POST", "/products", [{**PRODUCT, "product_id": 1}] * 2, {}, "product_id"
    for bad in ("x" * 129, "a%20b", "%00", "tab%09", "%C2%9F"):
        yield "PUT", f"/products/{bad}", PRODUCT, {}, "product_id"
        for method, path in (("GET", "/products/{}"), ("DELETE", "/products/{}"), ("GET", "/products/{}/similar"),
                             ("GET", "/customers/{}/feed"), ("DELETE", "/customers/{}")):
            field = "product_id" if path.startswith("/products") else "customer_id"
            yield method, path.format(bad), None, {}, field
    for k in (0, 101, -1, "abc", 1.5):
        yield "GET", "/products/1/similar", None, {"k": k}, "k"
    feed = {"page": [0, 10_001, -1, "abc", 1.5, ""], "per_page": [0, -1, "abc"], "sort": ["cheapest", "PRICE_ASC"],
            "min_price": [-1, "abc", "nan"], "max_price": [-1, "abc"], "in_stock": ["maybe", "2"],
            "min_score": [-0.1, 2.1, "abc"], "feed_id": ["x" * 65], "backend": ["solr", "elasticsearch"],
            "method": ["exact"]}
    for name, values in feed.items():
        for value in values:
            yield "GET", "/customers/1/feed", None, {name: value}, name
    yield "GET", "/customers/1/feed", None, {"min_price": 50, "max_price": 10}, "min_price"
    for limit in (0, 1001, "abc", -3):
        yield "GET", "/queue/dead-letter", None, {"limit": limit}, "limit"
    for limit in (0, "abc", -3):
        yield "POST", "/queue/dead-letter/redrive", None, {"limit": limit}, "limit"


CORPUS = list(corpus())


@pytest.fixture(scope="module")
def app(tmp_path_factory, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path_factory.mktemp("corpus") / "data"), "load_demo": False, "admin_key": "k"},
        "jobs": {"enabled": False}, "catalog": {"max_bulk": 5}, "events": {"max_batch": 5},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.put("/products/1", json=PRODUCT).status_code == 201
        assert client.post("/events", json=EVENT).status_code == 202
        yield client


def fingerprint(client: TestClient) -> tuple:
    """Every row that a request could change, summarised."""
    db = client.app.state.services.db
    return tuple(db.read(f"SELECT count(*), coalesce(sum(hash(COLUMNS(*))), 0) FROM {table}")[0] for table in (
        "products", "events", "queue_messages", "user_vectors", "purchases", "embeddings", "product_ids",
        "customer_ids"))


def test_the_corpus_is_large_and_covers_every_operation_with_input():
    assert len(CORPUS) >= 200
    operations = {(method, path.split("?")[0].replace("/1", "/{id}")) for method, path, *_ in CORPUS}
    assert len(operations) >= 10


@pytest.mark.parametrize(("method", "path", "body", "query", "field"), CORPUS,
                         ids=[f"{i}-{c[0]}-{c[4]}" for i, c in enumerate(CORPUS)])
def test_bad_input_is_refused_naming_the_field(app, method, path, body, query, field):
    app.app.state.services.consumer.stop()  # no background write between the two fingerprints
    before = fingerprint(app)
    raw = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    answer = app.request(method, path, content=raw, params=query,
                         headers={"content-type": "application/json", **ADMIN})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    named = answer.json().get("field") or ""
    assert named == field or named.startswith(f"{field}["), answer.text  # e.g. category_path[0]
    assert fingerprint(app) == before
    assert app.get("/health/ready").status_code == 200
