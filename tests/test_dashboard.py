"""The dashboard over HTTP: the numbers it shows are the API's, names are escaped, odd ids get a page that says
so, and with no admin key configured it is refused like every admin route."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from tests.dashboard_shop import ADMIN, ADMIN_KEY, seed
from tests.helpers import LOCAL, wait_until
from web.app import create_app
from web.dashboard.charts import line_chart


@pytest.fixture(scope="module")
def shop(tmp_path_factory, encoder) -> Iterator[TestClient]:
    config = load_config(overrides={
        "server": {"data_dir": str(tmp_path_factory.mktemp("dash-http") / "data"), "load_demo": False},
        "jobs": {"enabled": False}, "security": {"admin_keys": [ADMIN_KEY]}, "training": {"epochs": 2},
    })
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        seed(client, retrains=1)
        yield client


def _cards(html: str) -> dict[str, str]:
    return {label.strip(): value for value, label in re.findall(r"<b>([^<]+)</b><span>([^<]+)</span>", html)}


def test_the_overview_shows_the_numbers_of_the_api(shop: TestClient) -> None:
    page = shop.get("/dashboard/", headers=ADMIN)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    totals = shop.get("/analytics", headers=ADMIN).json()["totals"]
    ready = shop.get("/health/ready").json()
    cards = _cards(page.text)
    assert cards["click-through, 7 days"] == f"{totals['click_through_rate']:.1%}"
    assert totals["clicks"] > 0  # the seeded shop clicked some of what it was shown
    assert cards["events"] == f"{ready['events']:,}" and cards["products"] == f"{ready['products']:,}"
    assert f"clicks {totals['clicks']:,.0f}" in page.text


def test_the_browser_login_takes_the_key_as_the_password(shop: TestClient) -> None:
    basic = base64.b64encode(f"anyone:{ADMIN_KEY}".encode()).decode()
    assert shop.get("/dashboard/jobs", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    wrong = base64.b64encode(b"anyone:guess").decode()
    for header in (f"Basic {wrong}", "Basic !!not-base64!!"):
        refused = shop.get("/dashboard/jobs", headers={"Authorization": header})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert shop.get("/queue", headers={"Authorization": f"Basic {basic}"}).status_code == 200  # any route


def test_names_are_escaped_and_unknown_ids_are_said(shop: TestClient) -> None:
    evil = {"name": "<script>alert(1)</script> Shoe", "merchant": "Acme", "category_path": ["Shoes"],
            "color": "Red", "price": 10.0}
    assert shop.put("/products/evil", json=evil).status_code == 201
    page = shop.get("/dashboard/product?id=evil", headers=ADMIN).text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; Shoe" in page
    assert "No product nope in the catalog" in shop.get("/dashboard/product?id=nope", headers=ADMIN).text
    stranger = shop.get("/dashboard/customer?id=never-seen", headers=ADMIN)
    assert stranger.status_code == 200 and "what a new visitor sees" in stranger.text
    assert 'id="feed"' in stranger.text  # the non-personal feed, with reasons
    assert shop.get("/dashboard/customer?id=" + "x" * 200, headers=ADMIN).status_code == 400


def test_a_dashboard_look_is_not_an_impression(shop: TestClient) -> None:
    before = shop.get("/analytics", headers=ADMIN).json()["totals"]["impressions"]
    shop.get("/dashboard/customer?id=shopper-7", headers=ADMIN)
    assert shop.get("/analytics", headers=ADMIN).json()["totals"]["impressions"] == before


def test_without_an_admin_key_configured_the_dashboard_is_refused(client: TestClient) -> None:
    answer = client.get("/dashboard/")
    assert answer.status_code == 403 and "security.admin_keys" in answer.json()["detail"]


def test_a_chart_has_a_point_per_value_and_says_when_there_is_none() -> None:
    svg = line_chart({"a": [(1.0, 2.0), (2.0, 4.0)], "b": [(1.0, 1.0)]}, "T")
    assert svg.count('class="point"') == 3 and 'data-points="3"' in svg and "<polyline" in svg
    assert "no data yet" in line_chart({"a": []}, "T")


def test_the_jobs_page_lists_the_runs_of_the_api(shop: TestClient) -> None:
    page = shop.get("/dashboard/jobs", headers=ADMIN).text
    runs = [run for job in shop.get("/jobs").json() for run in job["last_runs"]]
    assert runs and page.count('class="run"') == len(runs)
    assert all(f'{run["seconds"]:.2f} s' in page for run in runs)
