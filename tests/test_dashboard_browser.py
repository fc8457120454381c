"""The dashboard in a real headless Chromium (network off): refused without the admin key, every page loads
with it, every plot draws data points of the seeded shop, the customer inspector shows a known shopper's items.
Screenshots of every page go to bench/screenshots/ (ignored by git)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

from appliance.config import load_config
from tests.browser import chromium, requested_urls, serve
from tests.dashboard_shop import ADMIN_KEY, NAMES, SHOPPER, SHOPPER_ITEMS, seed
from tests.helpers import wait_until
from web.app import create_app

SHOTS = Path(__file__).resolve().parent.parent / "bench" / "screenshots"
PAGES = {  # page -> the plots it must draw, with the least number of data points each shows for the seeded shop
    "overview": ("/dashboard/", {"Events per hour": 20, "Feeds served per hour": 1,  # the feeds were all shown now
                                 "Click-through per source, per day": 1}),
    "models": ("/dashboard/models", {"NDCG@10 of each version and its baselines": 4}),  # 2 versions x model, pop.
    "jobs": ("/dashboard/jobs", {"Run durations (seconds)": 3}),
    "customer": (f"/dashboard/customer?id={SHOPPER}", {}),
    "product": ("/dashboard/product?id=1", {"Events per day (30 days)": 2}),
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory, encoder) -> Iterator[str]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path_factory.mktemp("dash") / "data"), "load_demo": False},
        "jobs": {"enabled": False}, "security": {"admin_keys": [ADMIN_KEY]},
        "training": {"epochs": 2}, "analytics": {"flush_seconds": 0.2},
    })
    app = create_app(config, encoder=encoder)
    with serve(app) as base:
        wait_until(lambda: app.state.services.ready.is_set(), what="ready")
        with httpx.Client(base_url=base, timeout=60) as client:
            seed(client)
        yield base


@pytest.fixture(scope="module")
def chrome(tmp_path_factory) -> Iterator:
    with chromium(tmp_path_factory.mktemp("profile")) as driver:
        yield driver


def _login(base: str) -> str:
    return base.replace("http://", f"http://operator:{ADMIN_KEY}@")


def test_the_dashboard_refuses_without_the_admin_key(shop: str) -> None:
    for path in ("/dashboard/", "/dashboard/models", "/dashboard/customer?id=x"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{shop}{path}")
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic")  # the browser asks for the key
    wrong = urllib.request.Request(f"{shop}/dashboard/", headers={"Authorization": "Bearer not-the-key"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong)
    assert refused.value.code == 401


@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_loads_and_each_plot_draws(shop: str, chrome, name: str) -> None:
    path, plots = PAGES[name]
    requested_urls(chrome)
    chrome.get(_login(shop) + path)
    assert chrome.find_element(By.CSS_SELECTOR, "header .brand").text == "appliance"
    for title, least in plots.items():
        svg = chrome.find_element(By.CSS_SELECTOR, f'svg.chart[aria-label="{title}"]')
        assert svg.size["width"] > 300 and svg.size["height"] > 80  # laid out, not collapsed
        points = svg.find_elements(By.CSS_SELECTOR, "circle.point")
        assert len(points) >= least, title
        assert all(p.is_displayed() for p in points[:5])
    SHOTS.mkdir(parents=True, exist_ok=True)
    chrome.save_screenshot(str(SHOTS / f"{name}.png"))
    # chrome: and chrome-untrusted: are the browser's own new tab page (its WebUI schemes, never the network)
    local = (shop, _login(shop), "data:", "about:", "chrome:", "chrome-untrusted:")
    outside = [u for u in requested_urls(chrome) if not u.startswith(local)]
    assert outside == []
    assert [e["message"] for e in chrome.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_customer_inspector_shows_the_shopper_s_recent_items(shop: str, chrome) -> None:
    chrome.get(_login(shop) + f"/dashboard/customer?id={SHOPPER}")
    rows = chrome.find_elements(By.CSS_SELECTOR, "#recent tbody tr")
    shown = [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows]
    assert shown == [NAMES[pid] for pid in SHOPPER_ITEMS]
    assert "From model" in chrome.find_element(By.TAG_NAME, "main").text
    feed = chrome.find_elements(By.CSS_SELECTOR, "#feed tbody tr")
    assert feed and all(r.find_elements(By.TAG_NAME, "td")[2].text in {"personal", "popular", "new"} for r in feed)
    assert "personal" in {r.find_elements(By.TAG_NAME, "td")[2].text for r in feed}
