"""One log format for the whole process (text or JSON), one line per request, no progress bars when serving."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from appliance.config_sections import LoggingConfig
from web.bench.common import Server, http_json
from web.telemetry import configure_logging

FEED = "/customers/{customer_id}/feed"


@pytest.fixture
def captured() -> Iterator[callable]:
    """configure_logging into a buffer; yields a function that switches the format and returns the buffer."""
    handlers: list[logging.Handler] = []

    def use(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        handlers.append(configure_logging(LoggingConfig(fmt, "INFO"), stream))
        return stream

    yield use
    for handler in handlers:
        logging.getLogger().removeHandler(handler)


def test_json_request_lines_parse_and_carry_the_fields(client: TestClient, captured) -> None:
    stream = captured("json")
    feed = client.get("/customers/7/feed").json()
    client.post("/events", json={"customer_id": 7, "product_id": 1, "event_name": "product_viewed"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [r for r in lines if r["logger"] == "appliance.http"]
    line = next(r for r in requests if r["route"] == FEED)
    assert (line["method"], line["status"], line["path"]) == ("GET", 200, "/customers/7/feed")
    assert line["recommendation_id"] == feed["recommendation_id"]
    assert line["duration_ms"] > 0 and line["level"] == "INFO" and line["time"].endswith("+00:00")
    event = next(r for r in requests if r["route"] == "/events")
    assert (event["method"], event["status"]) == ("POST", 202) and "recommendation_id" not in event


def test_text_request_lines_read_as_one_sentence(client: TestClient, captured) -> None:
    stream = captured("text")
    rid = client.get("/customers/7/feed").json()["recommendation_id"]
    line = next(ln for ln in stream.getvalue().splitlines() if "appliance.http" in ln)
    assert f"INFO appliance.http: GET {FEED} 200 " in line and line.endswith(f"ms recommendation_id={rid}")


def test_the_served_log_is_one_json_object_per_line_without_progress_bars(tmp_path) -> None:
    log = tmp_path / "server.log"
    env = {"APPLIANCE_LOGGING__FORMAT": "json"}
    with Server(tmp_path / "data", log_path=log, env=env) as server:
        status, feed = http_json("GET", f"{server.base}/customers/3/feed")
        assert status == 200
    text = log.read_text()
    assert "Loading weights" not in text and "\r" not in text  # the model loads with no bar
    records = [json.loads(line) for line in text.splitlines()]  # every line, uvicorn's included, is JSON
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert any(r.get("route") == FEED and r.get("recommendation_id") == feed["recommendation_id"] for r in records)
    assert not any("HTTP/1.1" in r["message"] for r in records)  # uvicorn's own access log is off
