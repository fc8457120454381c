"""Shared fixtures: one real MiniLM encoder per test session, real DuckDB files in temp dirs, real HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from litestar.testing import TestClient  # noqa: E402

from appliance.config import Config, load_config  # noqa: E402
from appliance.encoder import Encoder  # noqa: E402
from storage.db import Database  # noqa: E402
from tests.helpers import LOCAL, wait_until  # noqa: E402
from web.app import create_app  # noqa: E402


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The real all-MiniLM-L6-v2, loaded once (importing sentence-transformers alone takes ~10 s)."""
    config = load_config()
    enc = Encoder(config.encoder.model, config.encoder.dim, config.encoder.batch_size)
    enc.load()
    return enc


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(overrides={"server": {"data_dir": str(tmp_path / "data"), "load_demo": False}})


@pytest.fixture
def client(config: Config, encoder: Encoder) -> Iterator[TestClient]:
    """A started app (lifespan run) whose start-up has finished."""
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as test_client:
        wait_until(lambda: test_client.get("/health/ready").status_code == 200, what="ready")
        yield test_client


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A fresh DuckDB store in a temp dir."""
    database = Database(tmp_path / "appliance.duckdb")
    yield database
    database.close()


@pytest.fixture
def live_server(config: Config, encoder: Encoder) -> Iterator[str]:
    """The appliance over real HTTP on 127.0.0.1 (for the browser); yields its base URL once it is ready."""
    from tests.browser import serve

    app = create_app(config, encoder=encoder)
    with serve(app) as base:
        wait_until(lambda: app.state.services.ready.is_set(), what="ready")
        yield base


@pytest.fixture
def browser(tmp_path: Path):
    """A headless Chromium with the network off (only 127.0.0.1 resolves) and a fresh profile."""
    from tests.browser import chromium

    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver
