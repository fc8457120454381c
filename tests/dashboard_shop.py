"""A seeded shop for the dashboard tests: the small catalog, shoppers active over two days, feeds shown and
clicked, and the retrain and popularity jobs run through the API (so the models and jobs pages have history)."""

from __future__ import annotations

import random
from datetime import timedelta

import httpx

from appliance.types import now_utc
from tests.helpers import small_catalog, wait_embedded, wait_until

ADMIN_KEY = "ak_dashboard_operator_1"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SHOPPER = "shopper-7"
SHOPPER_ITEMS = (3, 5, 1)  # the known shopper's last three products, newest first (all running shoes)
NAMES = {p["product_id"]: p["name"] for p in small_catalog()}


def _at(hours_ago: float) -> str:
    return (now_utc() - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed(client: httpx.Client, retrains: int = 2) -> None:
    assert client.post("/products", json=small_catalog()).status_code == 202
    wait_embedded(client)
    rng = random.Random(7)
    kinds = ["product_viewed"] * 5 + ["product_clicked"] * 3 + ["product_added_to_cart", "product_purchased"]
    events = [
        {"customer_id": f"c{c}", "product_id": rng.randint(1, len(NAMES)), "event_name": rng.choice(kinds),
         "timestamp": _at(rng.uniform(1, 40))}
        for c in range(24) for _ in range(12)
    ]
    events += [{"customer_id": SHOPPER, "product_id": pid, "event_name": "product_clicked", "timestamp": _at(h)}
               for h, pid in zip((0.3, 0.2, 0.1), reversed(SHOPPER_ITEMS), strict=True)]
    assert client.post("/events", json=events).status_code == 202
    wait_until(lambda: client.get("/queue").json()["depth"] == 0, what="the queue drained")
    for c in range(12):  # feeds shown, some of their items clicked with the recommendation id
        feed = client.get(f"/customers/c{c}/feed").json()
        for item in feed["items"][: c % 3]:
            client.post("/events", json={"customer_id": f"c{c}", "product_id": item["product"]["product_id"],
                                         "event_name": "product_clicked", "position": item["position"],
                                         "recommendation_id": feed["recommendation_id"]})
    for job in ["popularity"] + ["retrain"] * retrains:
        done = len(_runs(client, job))
        assert client.post(f"/jobs/{job}/run", headers=ADMIN).status_code == 202
        wait_until(lambda j=job, n=done: len(_runs(client, j)) > n, timeout=300, what=f"{job} finished")


def _runs(client: httpx.Client, name: str) -> list[dict]:
    return next(j for j in client.get("/jobs").json() if j["name"] == name)["last_runs"]
