"""Stopping cleanly: nothing the start-up froze out of the garbage collector outlives close(), and no thread
the services started outlives it either.

Frozen objects are never finalised at interpreter exit, and DuckDB's bindings (nanobind) then report every
connection and type they hold as leaked on stderr: the noise that ended `make test`. Closing stops every thread
the services started (appliance/threads.py): the background popularity refresh, the widget tables' rebuild,
triggered jobs, the start-up warm-up; each is joined before DuckDB closes, so none still runs or touches the
store afterwards, and one that does not end in its bounded wait is named in the log.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

import pytest
from litestar.testing import TestClient

from appliance.threads import Threads
from tests.helpers import LOCAL, wait_until
from tests.test_jobs import _config
from web.app import create_app
from web.services import build_services
from web.startup import _warm_feeds


def test_a_warm_up_that_ends_after_close_began_freezes_nothing(client: TestClient) -> None:
    services = client.app.state.services
    wait_until(lambda: not any(t.name == "feed-warm" for t in threading.enumerate()), what="the start-up warm-up")
    services.closing = True  # as close() does first: a warm-up finishing after this must not freeze
    gc.unfreeze()  # what the start-up's own warm-up froze (close() unfreezes it too)
    _warm_feeds(services)  # the real warm-up, over the open store
    assert gc.get_freeze_count() == 0



OURS = ("popularity", "widget-tables", "feed-warm", "demo-vectors", "job-")


def _names() -> list[str]:
    return [t.name for t in threading.enumerate()]


def _ours() -> list[str]:
    return [name for name in _names() if name.startswith(OURS)]


def test_close_refuses_new_threads_joins_running_ones_and_names_one_that_does_not_end(caplog) -> None:
    threads, release, ran = Threads("test"), threading.Event(), []
    assert threads.start(lambda: (release.wait(), ran.append(1)), "quick-one")
    assert threads.start(release.wait, "stuck-one")
    wait_until(lambda: {"quick-one", "stuck-one"} <= set(_names()), what="both running")
    threading.Timer(0.05, release.set).start()  # the quick one ends while close waits for it
    with caplog.at_level(logging.WARNING, logger="appliance.threads"):
        assert threads.close(10.0) == []
    assert ran == [1] and not {"quick-one", "stuck-one"} & set(_names())
    assert not threads.start(ran.append, "late", 2) and ran == [1]  # closed: nothing starts

    stuck, never = Threads("test"), threading.Event()
    stuck.start(never.wait, "stuck-one")
    with caplog.at_level(logging.WARNING, logger="appliance.threads"):
        assert stuck.close(0.05) == ["stuck-one"]
    assert "stuck-one" in caplog.text and "still running" in caplog.text
    never.set()


@pytest.mark.parametrize("how", ["feed", "job"])
def test_a_popularity_refresh_in_flight_ends_before_close_returns_and_before_duckdb_closes(tmp_path, encoder,
                                                                                           how) -> None:
    services = build_services(_config(tmp_path), encoder)
    rec = services.recommender
    rec.popularity_of(rec.view())  # the first ranking, computed in this thread
    load, started, finished = rec.live._load_popularity, threading.Event(), []

    def slow(now):  # the store's popularity read, begun just before the server stops
        started.set()
        time.sleep(0.5)
        finished.append(load(now))  # DuckDB: raises once the database is closed
        return finished[-1]

    rec.live._load_popularity = slow
    if how == "feed":  # a feed asked once the ranking is older than the TTL starts the refresh
        rec.live._ttl = 0.0
        rec.popularity_of(rec.view())
    else:
        assert services.jobs.trigger("popularity")
    assert started.wait(30)
    services.close()
    assert len(finished) == 1, "the refresh ran into the closed store"  # main: close returned mid-read
    assert _ours() == []


def test_after_close_no_thread_of_the_services_is_left_and_none_starts(tmp_path, encoder) -> None:
    app = create_app(_config(tmp_path), encoder=encoder)
    with TestClient(app, base_url=LOCAL) as client:
        services = client.app.state.services
        wait_until(lambda: services.ready.is_set(), what="start-up")
        services.recommender.live._ttl = 0.0  # every feed from now on wants a refresh
        assert client.get("/customers/1/feed").status_code == 200
    assert _ours() == [], "threads of the closed services still running"
    services.recommender.popularity_of(services.recommender.view())  # the view is in memory: no store read
    assert _ours() == [], "a closed recommender started a refresh"
