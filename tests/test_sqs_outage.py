"""SQS down for a while under a running appliance: the consumer and the outbox sender each say so once (a warning,
no traceback), back off up to their caps, say once that SQS works again, and /metrics counts the spell."""

from __future__ import annotations

import logging
import re
import time

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from tests.sqs_server import make_queues, overrides
from web.app import create_app
from web.bench.common import free_port
from web.bench.sqs_local import moto_server

CAP = 2.0  # the consumer's longest wait between tries, in this test (its first is 1 s)


def _metric(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_an_sqs_outage_is_two_log_lines_per_loop_and_a_metric(tmp_path, encoder, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    with moto_server(port) as endpoint:
        queues = make_queues(endpoint, visibility=5)
        config = load_config(overrides={
            "server": {"data_dir": str(tmp_path / "data"), "load_demo": False},
            "realtime": {"receive_wait_seconds": 1.0, "consumer_backoff_max_seconds": CAP},
            **overrides(endpoint, queues.url),
        })
        http = TestClient(create_app(config, encoder=encoder), base_url=LOCAL)
        http.__enter__()
    try:
        wait_until(lambda: http.get("/health/ready").status_code == 200, what="ready")
        assert http.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(http)
        # SQS has been down since the block above ended: events are still accepted, into the outbox
        events = [{"customer_id": f"out-{i}", "product_id": 1 + i % 5, "event_name": "product_clicked"}
                  for i in range(6)]
        assert http.post("/events", json=events).status_code == 202
        time.sleep(6.0)  # tries of the consumer after 1, 2, 2, 2 s
        text = http.get("/metrics").text
        assert _metric(text, "appliance_queue_outages_total", 'cause="sqs",part="consumer"') == 1
        assert _metric(text, "appliance_queue_outages_total", 'cause="sqs",part="outbox"') == 1
        assert _metric(text, "appliance_queue_outage_seconds", 'part="consumer"') > 2.0
        during = list(caplog.records)
        with moto_server(port):
            wait_until(lambda: http.get("/queue").json()["processed"] >= 6, what="the backlog to be processed")
            wait_until(lambda: _metric(http.get("/metrics").text, "appliance_queue_outage_seconds",
                                       'part="consumer"') == 0, what="the consumer's spell to end")
            text = http.get("/metrics").text
    finally:
        http.__exit__(None, None, None)
    records = [r for r in caplog.records if r.name.split(".")[0] in ("appliance", "jobs", "storage", "web")]
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR]  # no traceback, no error
    for loop in ("event consumer", "SQS outbox sender"):
        mine = [r for r in records if r.getMessage().startswith(loop)]
        assert [r.levelname for r in mine if r.levelno >= logging.INFO] == ["WARNING", "INFO"], loop
        assert "SQS unreachable" in mine[0].getMessage() or "send failed" in mine[0].getMessage()
        assert "works again" in [r for r in mine if r.levelno == logging.INFO][0].getMessage()
    waits = [float(m.group(1)) for r in during
             if (m := re.search(r"^event consumer still waiting .* next try in ([\d.]+)s", r.getMessage()))]
    assert len(waits) >= 3 and waits[0] == pytest.approx(1.0)  # 1 s, doubling, capped
    assert max(waits) == waits[-1] == pytest.approx(CAP)
    assert _metric(text, "appliance_queue_outages_total", 'cause="sqs",part="consumer"') == 1
