"""The Elasticsearch adapter against a real local Elasticsearch-compatible server (noida-db) over HTTP."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from storage import elastic
from storage.elastic import Filters
from storage.elastic_outbox import make_elastic_sync
from tests.helpers import ELASTIC as CFG
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app

pytestmark = pytest.mark.filterwarnings("ignore:The 'body' parameter is deprecated:DeprecationWarning")


def noida_binary() -> str | None:
    """$NOIDA_DB_BIN, or the binary inside the installed noida_db package."""
    if os.environ.get("NOIDA_DB_BIN"):
        return os.environ["NOIDA_DB_BIN"]
    spec = importlib.util.find_spec("noida_db")
    binary = Path(spec.origin).with_name("noida-db") if spec and spec.origin else None
    return str(binary) if binary and binary.is_file() else None


@pytest.fixture
def local_cluster(tmp_path: Path):
    binary = noida_binary()
    if binary is None:
        pytest.skip("noida-db not installed (pip install noida-db==0.2.3 or set NOIDA_DB_BIN): no local cluster")
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "start", "--only", "elasticsearch", "--elasticsearch-port", str(port),
         "--data-dir", str(tmp_path / "noida")], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = elastic.make_client(replace(CFG, url=f"http://127.0.0.1:{port}"))
        for _ in range(300):  # wait for it to listen (ping answers False until then)
            if client.ping() or server.poll() is not None:
                break
            time.sleep(0.1)
        assert server.poll() is None and client.ping(), "noida-db did not start"
        yield client
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_script_score_ranking_on_a_local_cluster_equals_numpy_cosine(local_cluster, db):
    rng = np.random.default_rng(11)
    vectors, user = rng.normal(size=(40, 384)).astype(np.float32), rng.normal(size=384).astype(np.float32)
    sync = make_elastic_sync(CFG, db, dims=384, client=local_cluster, sleep=lambda s: None)
    sync.mark_products([f"p-{i}" for i in range(40)])  # documents are keyed by the shop's ids
    docs = {f"p-{i}": (vectors[i], {"product_id": f"p-{i}", "in_stock": i % 2 == 0}) for i in range(40)}
    assert sync.sync_once(lambda ids: {i: docs[i] for i in ids}, lambda ids: {}).acked == 40
    local_cluster.indices.refresh(index=CFG.product_index)
    cosine = vectors @ user / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(user))
    order = np.argsort(-cosine).tolist()
    got = elastic.search_feed(local_cluster, CFG, user, per_page=40)
    assert [pid for pid, _ in got] == [f"p-{i}" for i in order]
    assert [score for _, score in got] == pytest.approx(cosine[order].tolist(), abs=1e-5)
    got = elastic.search_feed(local_cluster, CFG, user, filters=Filters(in_stock=True), page=2, per_page=5)
    assert [pid for pid, _ in got] == [f"p-{i}" for i in order if i % 2 == 0][5:10]


@contextmanager
def _synced_shop(local_cluster, tmp_path: Path, encoder, **overrides) -> Iterator[TestClient]:
    """The small catalog and one shopper who carted SKU-1, synced to the local cluster."""
    url = local_cluster.transport.hosts[0]
    es = {"enabled": True, "url": f"http://{url['host']}:{url['port']}", "product_index": "shop", "max_retries": 0}
    config = load_config(overrides={"server": {"data_dir": str(tmp_path / "d"), "load_demo": False, "admin_key": "k"},
                                    "jobs": {"enabled": False}, "elasticsearch": es, **overrides})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        client.post("/products", json=[{**p, "product_id": f"SKU-{p['product_id']}"} for p in small_catalog()])
        wait_embedded(client)
        client.post("/events", json={"customer_id": "anon-5", "product_id": "SKU-1",
                                     "event_name": "product_added_to_cart"})
        wait_until(lambda: client.get("/customers/anon-5/feed").json()["personalized"], what="a user vector")
        assert client.app.state.services.jobs.run("sync").detail.startswith("sent 15")  # 14 products and 1 user
        assert client.get("/sync").json()["pending"] == 0
        local_cluster.indices.refresh(index="shop")
        yield client


def _nearest(client: TestClient, customer: str, k: int) -> tuple[list[str], np.ndarray]:
    """The shopper's nearest products by the appliance's own index, as shop ids, with their cosines."""
    services = client.app.state.services
    keys, sims = services.index.query(services.users.get(services.ids.customers.key(customer)).vector, k)
    return services.ids.products.exts(keys.tolist()), sims


def test_feed_ranked_inside_elasticsearch_equals_the_appliance_ranking(local_cluster, tmp_path, encoder):
    with _synced_shop(local_cluster, tmp_path, encoder) as client:
        services = client.app.state.services
        # the shopper's document holds their vector, though the consumer's own user index sync has not run since
        # (the sync job reads the vectors from DuckDB)
        cfg = services.config.elasticsearch
        shopper = local_cluster.get(index=cfg.user_index, id="anon-5")["_source"]
        vector = services.users.get(services.ids.customers.key("anon-5")).vector
        assert shopper[cfg.user_vector_field] == pytest.approx(vector.tolist(), abs=1e-5)
        ranked = client.get("/customers/anon-5/feed", params={"backend": "elasticsearch", "per_page": 14}).json()
        assert ranked["ordering"] == "personal" and ranked["total"] == 14
        got = [(i["product"]["product_id"], i["score"]) for i in ranked["items"]]
        ids, sims = _nearest(client, "anon-5", 14)
        assert [pid for pid, _ in got] == ids
        assert [score for _, score in got] == pytest.approx(((sims + 1.0) / 2.0).tolist(), abs=1e-4)  # the 0..1 scale
        knn = client.get("/customers/anon-5/feed", params={"backend": "elasticsearch", "method": "knn",
                                                      "per_page": 5, "category": "Running"}).json()
        running = {f"SKU-{i}" for i in range(1, 6)}
        assert [i["product"]["product_id"] for i in knn["items"]] == [i for i in ids if i in running][:5]
        excluded = client.get("/customers/anon-5/feed", params={"backend": "elasticsearch", "exclude": ids[0]}).json()
        assert ids[0] not in [i["product"]["product_id"] for i in excluded["items"]] and excluded["total"] == 13
        cheap = client.get("/customers/anon-5/feed", params={"backend": "elasticsearch", "sort": "price_asc"}).json()
        prices = [i["product"]["price"] for i in cheap["items"]]
        assert prices == sorted(prices) and cheap["ordering"] == "price_asc"


def test_the_elasticsearch_feed_takes_the_rules_and_diversity_of_the_appliance(local_cluster, tmp_path, encoder):
    def feed(**params) -> dict:
        answer = client.get("/customers/anon-5/feed", params={"backend": "elasticsearch", **params})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def paths(items: list[dict]) -> list[tuple]:
        return [tuple(i["product"]["category_path"]) for i in items]

    diverse = {"widgets": {"max_in_row": 1, "diversity_by": "subcategory"}}
    with _synced_shop(local_cluster, tmp_path, encoder, **diverse) as client:
        ids, _ = _nearest(client, "anon-5", 14)
        whole = feed(per_page=14)
        # the five running shoes are nearest; no two of one subcategory in a row while others are left
        assert sorted(i["product"]["product_id"] for i in whole["items"]) == sorted(ids)
        assert all(a != b for a, b in zip(paths(whole["items"])[:9], paths(whole["items"])[1:10], strict=True))
        for rule in ({"kind": "hide", "product_id": ids[0]}, {"kind": "pin", "product_id": ids[-1], "position": 1},
                     {"kind": "bury", "product_id": ids[1], "strength": 0.99}):
            assert client.post("/rules", json=rule, headers={"X-Admin-Key": "k"}).status_code == 201
        for method in ("script_score", "knn"):
            ruled = feed(per_page=13, method=method)
            got = [i["product"]["product_id"] for i in ruled["items"]]
            assert ruled["total"] == 13 and ids[0] not in got  # hidden: neither shown nor counted
            assert got[0] == ids[-1] and ruled["items"][0]["source"] == "pinned"  # the farthest, pinned first
            assert ids[1] in got[-2:]  # buried to the end (diversity may swap the last two)
            pages = [feed(page=p, per_page=5, method=method)["items"] for p in (1, 2, 3)]
            assert [i["product"]["product_id"] for page in pages for i in page] == got  # pages cut one order
        cheap = feed(sort="price_asc", per_page=14)  # the shopper's own order: hidden stays out, no pin
        prices = [i["product"]["price"] for i in cheap["items"]]
        assert prices == sorted(prices) and cheap["total"] == 13
        assert ids[0] not in [i["product"]["product_id"] for i in cheap["items"]]
