"""The consumer looks up a changed shopper's nearest products only when that shopper has asked for a feed since
their last lookup (jobs/feed.py `Feeds.prepare(asked_only=True)`): a shopper who only sends events costs no
lookup, and their next feed is the same feed, looked up on its way (off the event loop)."""

from litestar.testing import TestClient

from appliance.pipeline import FeedQuery
from tests.helpers import small_catalog, wait_embedded, wait_until


def _click(client: TestClient, customer: int, product: int) -> None:
    body = {"customer_id": customer, "product_id": product, "event_name": "product_clicked"}
    assert client.post("/events", json=body).status_code == 202


def _vector_after(client: TestClient, customer: int, product: int) -> None:
    services = client.app.state.services
    key = services.ids.customers.key(str(customer))
    before = services.users.cached(key)[1] if key is not None else None
    _click(client, customer, product)
    key = services.ids.customers.key(str(customer))
    wait_until(lambda: (v := services.users.cached(key)[1]) is not None and v is not before, what="a new vector")
    wait_until(lambda: (q := services.queue.stats()).depth == q.in_flight == 0, what="the consumer done")


def test_only_shoppers_who_asked_since_their_last_lookup_are_looked_up_by_the_consumer(client: TestClient) -> None:
    assert client.post("/products", json=small_catalog()).status_code == 202
    wait_embedded(client)
    services = client.app.state.services
    feeds, rec = services.feeds, services.recommender
    lookups: list[int] = []
    nearest = rec._near._nearest
    rec._near._nearest = lambda v, k: lookups.append(k) or nearest(v, k)

    _vector_after(client, 40, 1)  # events only, no feed asked: no lookup
    quiet = services.ids.customers.key("40")
    assert lookups == [] and not feeds.in_memory(quiet, FeedQuery())  # its feed goes off the loop, looks up
    feed = client.get("/customers/40/feed").json()
    assert feed["personalized"] and len(lookups) == 1

    _vector_after(client, 40, 2)  # asked since its last lookup: the consumer looks the new vector up
    assert len(lookups) == 2 and feeds.in_memory(quiet, FeedQuery())
    _vector_after(client, 40, 3)  # no feed asked since that lookup: skipped
    assert len(lookups) == 2 and not feeds.in_memory(quiet, FeedQuery())
    again = client.get("/customers/40/feed").json()
    assert again["personalized"] and len(lookups) == 3 and feeds.in_memory(quiet, FeedQuery())
    assert client.get("/customers/40/feed").json()["items"] == again["items"] and len(lookups) == 3
