"""One log format for the whole process (text or JSON), one line per request, no progress bars when serving."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from appliance.config_sections import LoggingConfig
from tests.helpers import wait_until
from web.bench.common import Server, http_json
from web.telemetry import LineWriter, configure_logging

FEED = "/customers/{customer_id}/feed"


@pytest.fixture
def captured() -> Iterator[callable]:
    """configure_logging into a buffer; yields a function that switches the format and returns a function giving
    the lines written so far (the handler's pending lines flushed first)."""
    handlers: list[logging.Handler] = []

    def use(fmt: str) -> callable:
        stream = io.StringIO()
        handler = configure_logging(LoggingConfig(fmt, "INFO"), stream)
        handlers.append(handler)

        def lines() -> list[str]:
            handler.flush()
            return stream.getvalue().splitlines()

        return lines

    yield use
    for handler in handlers:
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_json_request_lines_parse_and_carry_the_fields(client: TestClient, captured) -> None:
    written = captured("json")
    feed = client.get("/customers/7/feed").json()
    client.post("/events", json={"customer_id": 7, "product_id": 1, "event_name": "product_viewed"})
    lines = [json.loads(line) for line in written()]
    requests = [r for r in lines if r["logger"] == "appliance.http"]
    line = next(r for r in requests if r["route"] == FEED)
    assert (line["method"], line["status"], line["path"]) == ("GET", 200, "/customers/7/feed")
    assert line["recommendation_id"] == feed["recommendation_id"]
    assert line["duration_ms"] > 0 and line["level"] == "INFO" and line["time"].endswith("+00:00")
    event = next(r for r in requests if r["route"] == "/events")
    assert (event["method"], event["status"]) == ("POST", 202) and "recommendation_id" not in event


def test_text_request_lines_read_as_one_sentence(client: TestClient, captured) -> None:
    written = captured("text")
    rid = client.get("/customers/7/feed").json()["recommendation_id"]
    line = next(ln for ln in written() if "appliance.http" in ln)
    assert f"INFO appliance.http: GET {FEED} 200 " in line and line.endswith(f"ms recommendation_id={rid}")


def test_lines_are_written_by_the_writer_thread_in_batches_a_warning_at_once_and_none_lost_on_close() -> None:
    stream = io.StringIO()
    writer = LineWriter(stream, interval=30.0)  # no timed write within the test: only a warning, flush, close
    writer.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("tests.line_writer")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(writer)
    try:
        log.info("first")
        assert stream.getvalue() == ""  # pending, not written by the logging thread
        log.warning("careful")
        wait_until(lambda: stream.getvalue() == "INFO first\nWARNING careful\n", what="the warning written")
        threads = [threading.Thread(target=lambda t=t: [log.info("t%d-%d", t, i) for i in range(500)])
                   for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        log.removeHandler(writer)
        writer.close()
    lines = stream.getvalue().splitlines()[2:]
    assert len(lines) == 2000 and len(set(lines)) == 2000
    for t in range(4):  # each thread's lines in its order
        assert [ln for ln in lines if ln.startswith(f"INFO t{t}-")] == [f"INFO t{t}-{i}" for i in range(500)]
    assert not writer._thread.is_alive()


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
