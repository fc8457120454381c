"""The consumer looks up a changed shopper's nearest products only when that shopper asked for a feed within
`feed.prepare_window_seconds` (jobs/feed.py `Feeds.prepare(asked_only=True)`): a shopper who only sends events
costs no lookup, and their next feed is answered all the same, looked up on its way (off the event loop)."""

from litestar.testing import TestClient

from appliance.pipeline import FeedQuery
from jobs.feed import Feeds
from tests.helpers import small_catalog, wait_embedded, wait_until


def _from_memory(feeds: Feeds, shopper: int) -> bool:
    """Whether the shopper's feed is answered from memory, as the feed route asks (it counts as asking)."""
    return feeds.from_memory(shopper, FeedQuery()) is not None


def _vector_after(client: TestClient, customer: int, product: int) -> None:
    services = client.app.state.services
    key = services.ids.customers.key(str(customer))
    before = services.users.cached(key)[1] if key is not None else None
    body = {"customer_id": customer, "product_id": product, "event_name": "product_clicked"}
    assert client.post("/events", json=body).status_code == 202
    key = services.ids.customers.key(str(customer))
    wait_until(lambda: (v := services.users.cached(key)[1]) is not None and v is not before, what="a new vector")
    wait_until(lambda: (q := services.queue.stats()).depth == q.in_flight == 0, what="the consumer done")


def test_only_shoppers_who_asked_for_a_feed_lately_are_looked_up_by_the_consumer(client: TestClient) -> None:
    assert client.post("/products", json=small_catalog()).status_code == 202
    wait_embedded(client)
    services = client.app.state.services
    feeds, rec = services.feeds, services.recommender
    assert feeds.prepare_window == 1800.0  # config.toml
    clock = [1000.0]
    feeds._monotonic = lambda: clock[0]
    lookups: list[int] = []
    nearest = rec._near._nearest
    rec._near._nearest = lambda v, k: lookups.append(k) or nearest(v, k)

    _vector_after(client, 40, 1)  # events only, no feed asked: no lookup
    shopper = services.ids.customers.key("40")
    assert lookups == [] and not _from_memory(feeds, shopper)  # its feed goes off the loop
    feed = client.get("/customers/40/feed").json()
    assert feed["personalized"] and len(lookups) == 1  # looked up on its way
    for product in (2, 3):  # asked within the window: every new vector is looked up by the consumer
        _vector_after(client, 40, product)
        assert _from_memory(feeds, shopper)
    assert len(lookups) == 3
    clock[0] += 1801.0  # no feed for longer than the window
    _vector_after(client, 40, 4)
    assert len(lookups) == 3 and not _from_memory(feeds, shopper)
    again = client.get("/customers/40/feed").json()
    assert again["personalized"] and len(lookups) == 4 and _from_memory(feeds, shopper)
    assert client.get("/customers/40/feed").json()["items"] == again["items"] and len(lookups) == 4
    clock[0] += 1000.0
    assert _from_memory(feeds, shopper) and client.get("/customers/40/feed").json()["personalized"]
    clock[0] += 1000.0  # past the window since the last feed looked up, within it since one answered from memory
    _vector_after(client, 40, 5)
    assert len(lookups) == 5 and _from_memory(feeds, shopper)  # still prepared by the consumer
