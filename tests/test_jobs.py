"""Scheduled jobs against real stores: each job function, the scheduler, /jobs over HTTP."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from litestar.testing import TestClient

from appliance.config import Config, load_config
from appliance.types import Event, Scored, now_utc
from jobs import upkeep
from jobs.scheduler import JobSpec
from storage.impressions import Served
from tests.helpers import LOCAL, wait_until
from web.app import create_app
from web.services import Services, build_services
from web.startup import load_demo


def _config(tmp_path, **sections) -> Config:
    return load_config(overrides={
        "server": {"data_dir": str(tmp_path / "data"), "load_demo": False, "admin_key": "sesame"},
        "demo": {"products": 300, "customers": 120, "days": 5}, **sections,
    })


@pytest.fixture
def services(tmp_path, encoder) -> Iterator[Services]:
    built = build_services(_config(tmp_path), encoder)
    load_demo(built)
    built.indexer.run_once()
    yield built
    built.close()


def test_prune_keeps_everything_by_default(services: Services) -> None:
    now = now_utc()
    old = now - timedelta(days=2000)
    services.events.append([Event(99_042, 1, "product_clicked", old)], now)
    services.users.save([99_077], np.ones((1, 384), np.float32) / 384 ** 0.5, "mean", [old], now)
    events, vectors = services.events.count(), services.users.count()
    run = services.jobs.run("prune")
    assert run.outcome == "ok" and run.detail.startswith("nothing to prune")
    assert (services.events.count(), services.users.count()) == (events, vectors)


def test_prune_expires_vectors_outside_a_set_window_and_events_past_a_set_retention(tmp_path, encoder) -> None:
    built = build_services(_config(tmp_path, realtime={"history_window_hours": 48.0}, jobs={"retention_days": 90.0}),
                           encoder)
    try:
        load_demo(built)
        built.indexer.run_once()
        now = now_utc()
        old = now - timedelta(days=200)
        built.events.append([Event(99_042, 1, "product_clicked", old)], now)  # keys no demo shopper has
        built.updater.update(built.ids.customers.keys(["1001", "1002"]))  # demo shoppers, by their keys
        fresh = built.users.count()
        built.users.save([99_077], np.ones((1, 384), np.float32) / 384 ** 0.5, "mean", [old], now)
        shown = [Scored(1, 1.0, "popular"), Scored(2, 0.5, "popular")]
        built.impressions.store.append([Served("r", 99_042, "feed", shown, 1, "mean", old)])
        detail = built.jobs.run("prune").detail
        assert built.users.get(99_077) is None and built.users.count() == fresh
        assert built.db.read("SELECT count(*) FROM events WHERE customer_id = 99042")[0][0] == 0
        assert built.impressions.store.count() == 0
        assert detail == ("1 user vectors past the 48 h window expired; "
                          "1 events and 2 impressions older than 90 days deleted")
        assert built.jobs.runs.last("prune").detail == detail  # what /jobs shows
    finally:
        built.close()


def test_reindex_embeds_new_products_and_compacts_after_many_deletions(services: Services) -> None:
    for pid in range(1, 41):
        services.catalog.delete(pid)
    assert services.index.deleted == 40
    run = services.jobs.run("reindex")
    assert run.outcome == "ok" and "compacted: products" in run.detail
    assert services.index.deleted == 0 and len(services.index) == 260


def test_popularity_and_sync_jobs_record_their_runs(services: Services) -> None:
    assert services.jobs.run("popularity").detail.startswith("popularity recomputed:")
    assert services.jobs.run("sync").detail == "elasticsearch is not configured"
    widgets = services.jobs.run("widgets")
    assert widgets.outcome == "ok" and widgets.detail.startswith("bought together for "), widgets.detail
    assert [r.outcome for r in services.jobs.runs.history("popularity", 5)] == ["ok"]


def test_retrain_promotes_a_better_model_and_a_worse_one_leaves_serving_untouched(services: Services) -> None:
    def retrain(config: Config) -> str:
        return upkeep.retrain(config, services.events, services.catalog.store, services.models, services.serving,
                              services.updater, now_utc)

    first = retrain(services.config)
    assert "promoted" in first, first
    version = services.serving.get().version
    assert services.serving.get().model is not None and services.models.serving_version() == version
    shopper = services.ids.customers.key("1001")
    assert services.users.get(shopper).model_version == version  # active shoppers recomputed with the new model
    weak = replace(services.config, training=replace(services.config.training, max_examples=1, epochs=1,
                                                     min_network_steps=0))  # starved: no small-shop plan
    second = retrain(weak)
    assert "rejected" in second, second
    assert services.models.serving_version() == version and services.serving.get().version == version
    statuses = {c["version"]: c["status"] for c in services.models.candidates()}
    assert sorted(statuses.values()) == ["rejected", "serving"]


def test_a_failing_job_is_recorded_and_does_not_stop_the_next(services: Services) -> None:
    def boom() -> str:
        raise RuntimeError("disk on fire")

    services.jobs.specs["prune"] = JobSpec("prune", boom, "off")
    assert services.jobs.run("prune").outcome == "failed"
    assert services.jobs.runs.last("prune").detail == "RuntimeError: disk on fire"
    assert services.jobs.run("popularity").outcome == "ok"


def test_the_scheduler_runs_a_fast_interval_job_and_http_shows_it(tmp_path, encoder) -> None:
    config = _config(tmp_path, jobs={"popularity": "every 1s", "retrain": "off"})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        wait_until(lambda: _runs(client, "popularity") >= 1, timeout=30, what="a scheduled run")
        jobs = {j["name"]: j for j in client.get("/jobs").json()}
        assert jobs["popularity"]["last_runs"][0]["outcome"] == "ok"
        assert jobs["retrain"]["next_run"] is None and jobs["prune"]["next_run"] is not None
        assert client.post("/jobs/prune/run").status_code == 401
        assert client.post("/jobs/prune/run", headers={"X-Admin-Key": "wrong"}).status_code == 401
        started = client.post("/jobs/prune/run", headers={"X-Admin-Key": "sesame"})
        assert started.status_code == 202, started.text
        wait_until(lambda: _runs(client, "prune") >= 1, what="the triggered run")
        assert client.post("/jobs/nope/run", headers={"X-Admin-Key": "sesame"}).status_code == 404


def _runs(client: TestClient, name: str) -> int:
    return len(next(j for j in client.get("/jobs").json() if j["name"] == name)["last_runs"])


def test_admin_endpoints_are_closed_without_a_key(tmp_path, encoder) -> None:
    config = load_config(overrides={"server": {"data_dir": str(tmp_path / "d"), "load_demo": False}})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        answer = client.post("/queue/dead-letter/redrive")
        assert answer.status_code == 403 and "admin_key" in answer.json()["detail"]
