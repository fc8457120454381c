"""The appliance on its embedded defaults (a smaller demo): a shop that works from the first start."""

from litestar.testing import TestClient

from appliance.config import load_config
from appliance.demo import generate_demo
from appliance.types import now_utc
from tests.helpers import LOCAL, wait_until
from web.app import create_app

DEMO = {"products": 300, "customers": 30, "days": 3}


def test_first_start_loads_the_demo_and_its_recent_shoppers_get_personal_feeds(tmp_path, encoder) -> None:
    config = load_config(overrides={"server": {"data_dir": str(tmp_path / "data")}, "demo": DEMO})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        ready = client.get("/health/ready").json()
        assert ready["products"] == 300 and ready["events"] > 0
        services = client.app.state.services
        wait_until(lambda: services.users.count() > 0, timeout=120, what="demo shoppers' vectors")
        shop = generate_demo(config.demo.seed, 300, 30, 3, now_utc())
        # the demo's shopper numbers are the shop's ids ("1001"); inside, keys of the id map
        customer = next(c for c in shop.tastes if services.users.get(services.ids.customers.key(str(c))) is not None)
        feed = client.get(f"/customers/{customer}/feed", params={"per_page": 10}).json()
        assert feed["personalized"]
        # the hidden taste shows in the feed: its categories (parent > category) fill far more than their share
        liked = {path[:2] for path in shop.tastes[customer].categories}
        in_taste = sum(tuple(i["product"]["category_path"][:2]) in liked for i in feed["items"])
        catalog_share = sum(p.category_path[:2] in liked for p in shop.products) / len(shop.products)
        assert in_taste / len(feed["items"]) > 2 * catalog_share
        # then the demo trains its first tower (promoted only if it beats popularity on the demo's own split)
        def retrain_runs() -> list[dict]:
            return next(job for job in client.get("/jobs").json() if job["name"] == "retrain")["last_runs"]

        wait_until(retrain_runs, timeout=300, what="the demo's first retrain")
        assert [run["outcome"] for run in retrain_runs()] == ["ok"]
