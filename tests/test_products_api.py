"""The catalog over real HTTP (Litestar's test client), with the real model, DuckDB and hnswlib."""

from litestar.testing import TestClient

from tests.helpers import small_catalog, wait_embedded

RUNNING = {"Running"}


def test_put_creates_then_replaces_and_embeds_before_answering(client: TestClient) -> None:
    body = {"name": "Nike Air Max", "merchant": "Nike", "category_path": ["Shoes", "Sneakers", "Running"],
            "color": "Blue", "price": 150.0}
    created = client.put("/products/42", json=body)
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["text"] == "Nike Air Max | by Nike | Shoes | Sneakers | Running | Blue color | premium"
    assert out["embedded"] is True
    assert out["product"]["price_tier"] == "premium"
    replaced = client.put("/products/42", json={**body, "price": 20.0})
    assert replaced.status_code == 200
    assert replaced.json()["text"].endswith("| budget")
    assert client.get("/products/42").json()["product"]["price"] == 20.0


def test_bulk_upload_is_embedded_in_the_background_and_only_changed_lines_again(client: TestClient) -> None:
    catalog = small_catalog()
    first = client.post("/products", json=catalog)
    assert first.status_code == 202, first.text
    assert first.json() == {"received": 14, "created": 14, "updated": 0, "unchanged": 0, "to_embed": 14}
    wait_embedded(client)
    catalog[0]["color"] = "Green"
    again = client.post("/products", json=catalog)
    assert again.json() == {"received": 14, "created": 0, "updated": 1, "unchanged": 13, "to_embed": 1}
    wait_embedded(client)
    assert client.get("/health/ready").json()["indexed"] == 14


def test_similar_to_a_running_sneaker_are_sneakers_first(client: TestClient) -> None:
    client.post("/products", json=small_catalog())
    wait_embedded(client)
    similar = client.get("/products/1/similar", params={"k": 5})
    assert similar.status_code == 200, similar.text
    items = similar.json()["items"]
    assert [i["product"]["product_id"] for i in items if i["product"]["product_id"] == 1] == []
    paths = [i["product"]["category_path"] for i in items]
    assert all(p[:2] == ["Shoes", "Sneakers"] for p in paths), paths
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)


def test_deleted_product_leaves_feed_and_index(client: TestClient) -> None:
    client.post("/products", json=small_catalog())
    wait_embedded(client)
    assert client.delete("/products/2").status_code == 204
    assert client.get("/products/2").status_code == 404
    similar = client.get("/products/1/similar", params={"k": 13}).json()["items"]
    assert 2 not in [i["product"]["product_id"] for i in similar]
    feed = client.get("/customers/7/feed", params={"per_page": 100}).json()
    assert feed["total"] == 13


def test_bad_products_get_a_problem_naming_the_field(client: TestClient) -> None:
    missing = client.put("/products/5", json={"category_path": ["Shoes"]})
    assert missing.status_code == 400
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["field"] == "name"
    negative = client.post("/products", json=[{"product_id": 1, "name": "x", "category_path": ["a"], "price": -3}])
    assert negative.status_code == 400
    assert negative.json()["field"] == "[0].price"
    duplicate = client.post("/products", json=[{"product_id": 1, "name": "x", "category_path": ["a"]}] * 2)
    assert duplicate.status_code == 422
    assert duplicate.json()["field"] == "product_id"
    assert client.get("/products/999").json()["status"] == 404
    assert client.get("/products/abc").status_code in (400, 404)


def test_a_product_without_a_category_tree_is_accepted_and_its_line_leaves_the_part_out(client: TestClient) -> None:
    for pid, body in ((5, {"name": "Jumbo Bag Red Retrospot", "price": 2.08}),
                      (6, {"name": "Lunch Bag Woodland", "category_path": [], "price": 1.65})):
        assert client.put(f"/products/{pid}", json=body).status_code == 201
    stored = client.get("/products/5").json()
    assert stored["product"]["category_path"] == [] and stored["product"]["created_at"] is None
    assert stored["text"] == "Jumbo Bag Red Retrospot | budget"
    assert client.get("/products/6").json()["text"] == "Lunch Bag Woodland | budget"
