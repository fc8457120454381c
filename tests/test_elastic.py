"""The optional Elasticsearch adapter: exact request bodies, elasticmock round-trips, outbox and outages.

Only the third-party cluster is stood in for: elasticmock (recording, plus the mapping calls it lacks), canned
bulk answers, and a wrapper whose calls raise the client's own ConnectionError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import elasticsearch
import pytest
from elasticmock import elasticmock
from elasticmock.fake_elasticsearch import FakeElasticsearch
from elasticmock.fake_indices import FakeIndicesClient

from appliance.errors import InvalidInput, NotReady
from appliance.recommender import FeedQuery
from appliance.types import Product
from storage import elastic
from storage.elastic import Filters
from storage.elastic_outbox import ElasticSync, NoopElasticSync, make_elastic_sync
from tests.helpers import ELASTIC

CFG = ELASTIC
T0 = datetime(2026, 3, 1, 12, 0, 0)
VEC = {1: [0.5, 0.25, 1.0], 2: [1.0, 0.0, -0.5], 3: [0.0, 1.0, 0.0]}
# elasticmock calls the 7.17 client's APIs positionally; the 7.17 client deprecates body= against ES 8
pytestmark = [pytest.mark.filterwarnings("ignore:Using positional arguments for APIs:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The 'body' parameter is deprecated:DeprecationWarning")]
SHOE = Product(1, "Pegasus", "Nike", ("Shoes", "Running"), "Blue", 129.0, True, datetime(2026, 1, 1, 10))


class RecordingES(FakeElasticsearch):
    """elasticmock that logs each request, keeps mappings, and gives canned answers when it has some."""

    def __init__(self, *bulk_answers: dict) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.mappings: dict[str, dict] = {}
        self.bulk_answers, self.bodies = list(bulk_answers), []
        self.search_response: dict | None = None  # for queries elasticmock cannot evaluate

    @property
    def indices(self):
        return RecordingIndices(self)

    def bulk(self, body, **kwargs):
        self.bodies.append(body)
        return self.bulk_answers.pop(0) if self.bulk_answers else super().bulk(body=body, **kwargs)

    def search(self, index=None, body=None, **kwargs):
        self.calls.append(("search", index, body, kwargs))
        return self.search_response or super().search(index=index, body=body, **kwargs)


class RecordingIndices(FakeIndicesClient):
    def create(self, index, body=None, **kwargs):
        self.client.calls.append(("create", index, body))
        self.client.mappings[index] = json.loads(json.dumps(body["mappings"]))
        return super().create(index=index, body=body, **kwargs)

    def get_mapping(self, index):
        return {index: {"mappings": self.client.mappings[index]}}

    def put_mapping(self, index, body):
        self.client.calls.append(("put_mapping", index, body))
        self.client.mappings[index].setdefault("properties", {}).update(body["properties"])
        return {"acknowledged": True}


class Flaky:
    """Passes calls on to a client (and its .indices), but while `down`, or for `fail_times` calls, they raise."""

    def __init__(self, inner, down: bool = True, fail_times: int = 0, owner: Flaky | None = None) -> None:
        self.inner, self.down, self.fail_times, self.owner = inner, down, fail_times, owner or self

    def check(self) -> None:
        if self.down or self.fail_times > 0:
            self.fail_times -= 1
            raise elasticsearch.exceptions.ConnectionError("N/A", "Connection refused", OSError(111))

    def __getattr__(self, name):
        target = getattr(self.inner, name)
        if name == "indices":
            return Flaky(target, owner=self.owner)
        return lambda *a, **kw: (self.owner.check(), target(*a, **kw))[1]


def sync_for(db, client, config=CFG, clock=lambda: T0):
    sleeps: list[float] = []
    sync = ElasticSync(config, db, client, dims=3, sleep=sleeps.append, clock=clock)
    sync._indices_ready = bool(getattr(client, "bulk_answers", False))  # canned answers: skip the index check
    return sync, sleeps


def load_products(ids):  # the outbox and the documents hold the shop's ids (strings)
    return {i: (VEC[int(i)], {"product_id": i, "name": f"p{i}"}) for i in ids if int(i) in VEC}


def load_users(ids):
    return {i: VEC[int(i)] for i in ids if int(i) in VEC}


def ndjson(body: str) -> list[dict]:
    assert body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


# -- index management -------------------------------------------------------------------------------------
VECTOR = {"type": "dense_vector", "dims": 384, "index": True, "similarity": "cosine"}
KEYWORD, DATE, DOUBLE = {"type": "keyword"}, {"type": "date"}, {"type": "double"}
PRODUCT_FIELDS = {
    "product_vector": VECTOR, "product_id": KEYWORD, "name": {"type": "text"}, "merchant": KEYWORD,
    "category_path": KEYWORD, "categories": KEYWORD, "color": KEYWORD, "price": DOUBLE,
    "in_stock": {"type": "boolean"}, "created_at": DATE, "popularity": DOUBLE,
}


def test_new_indices_get_the_full_mapping():
    client = RecordingES()
    assert elastic.ensure_indices(client, CFG, 384) == {"products": "created", "shoppers": "created"}
    assert client.calls == [
        ("create", "products", {"mappings": {"properties": PRODUCT_FIELDS}}),
        ("create", "shoppers", {"mappings": {"properties": {
            "user_vector": VECTOR, "customer_id": KEYWORD, "updated_at": DATE}}}),
    ]
    assert elastic.ensure_indices(client, CFG, 384) == {"products": "unchanged", "shoppers": "unchanged"}


def test_an_existing_shop_index_only_gains_the_fields_it_lacks():
    client = RecordingES()
    shop = {"title": {"type": "text"}, "price": {"type": "scaled_float", "scaling_factor": 100},
            "name": {"type": "keyword"}}
    client.indices.create(index="products", body={"mappings": {"properties": shop}})
    client.calls.clear()
    elastic.ensure_indices(client, CFG, 384)
    ours = {k: v for k, v in PRODUCT_FIELDS.items() if k not in ("name", "price")}  # the shop has those two
    assert client.calls[0] == ("put_mapping", "products", {"properties": ours})
    assert {k: client.mappings["products"]["properties"][k] for k in shop} == shop  # the shop's own, intact
    client.mappings["products"]["properties"]["product_vector"]["dims"] = 128
    with pytest.raises(InvalidInput, match="128"):  # a vector field of another size is refused
        elastic.ensure_indices(client, CFG, 384)


# -- bulk payloads and the outbox -------------------------------------------------------------------------
def test_bulk_payloads_are_exact_and_only_acknowledged_items_leave_the_outbox(db):
    refused = {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad"}}
    client = RecordingES({"items": [{"update": {"status": 200}}, {"update": {"status": 201}},
                                    {"delete": {"status": 404}}]},
                         {"errors": True, "items": [{"index": refused}, {"index": {"status": 201}}]})
    sync, _ = sync_for(db, client)
    sync.mark_products(["1", "2", "4", "5"])
    sync.mark_users(["3", "2"])
    # product 4 is gone (left out), product 5 has no vector yet (None)
    result = sync.sync_once(lambda ids: {**load_products([i for i in ids if i != "4"]), "5": None}, load_users)
    assert (result.acked, result.failed, result.not_ready, result.outage) == (4, 1, 1, False)
    assert client.bodies[0] == (
        '{"update":{"_index":"products","_id":"1"}}\n'
        '{"doc":{"product_id":"1","name":"p1","product_vector":[0.5,0.25,1.0]},"doc_as_upsert":true}\n'
        '{"update":{"_index":"products","_id":"2"}}\n'
        '{"doc":{"product_id":"2","name":"p2","product_vector":[1.0,0.0,-0.5]},"doc_as_upsert":true}\n'
        '{"delete":{"_index":"products","_id":"4"}}\n'
    )
    assert ndjson(client.bodies[1]) == [
        {"index": {"_index": "shoppers", "_id": "2"}},
        {"customer_id": "2", "updated_at": T0.isoformat(), "user_vector": [1.0, 0.0, -0.5]},
        {"index": {"_index": "shoppers", "_id": "3"}},
        {"customer_id": "3", "updated_at": T0.isoformat(), "user_vector": [0.0, 1.0, 0.0]},
    ]
    assert {(it.kind, it.item_id) for it in sync.outbox.pending()} == {("product", "5"), ("user", "2")}
    assert sync.outbox.attempts("user", "2") == (1, "400: mapper_parsing_exception: bad")
    assert sync.outbox.attempts("product", "5") == (0, None)
    status = sync.status()
    assert (status.pending, status.failing, status.last_success) == (2, 1, T0)
    assert "mapper_parsing_exception" in status.last_error


def test_a_busy_cluster_gets_only_the_rejected_items_again_after_a_backoff(db):
    client = RecordingES({"errors": True, "items": [{"index": {"status": 201}}, {"index": {"status": 429}}]},
                         {"errors": False, "items": [{"index": {"status": 201}}]})
    sync, sleeps = sync_for(db, client)
    sync.mark_users(["1", "2"])
    assert sync.sync_once(load_products, load_users).acked == 2
    assert [line for line in ndjson(client.bodies[1]) if "index" in line] == [
        {"index": {"_index": "shoppers", "_id": "2"}}]
    assert sleeps == [0.5]
    assert sync.status().pending == 0
    client = RecordingES(*[{"items": [{"update": {"status": 200}}] * n} for n in (2, 1)])
    sync, _ = sync_for(db, client, config=replace(CFG, batch_size=2))
    sync.mark_products(["1", "2", "3"])
    assert sync.sync_once(load_products, load_users).acked == 3
    assert [len(ndjson(body)) for body in client.bodies] == [4, 2]  # batches of batch_size


def test_marks_are_idempotent_and_a_change_during_a_sync_stays_pending(db):
    now = [T0]
    client = RecordingES({"items": [{"update": {"status": 200}}] * 2})
    sync, _ = sync_for(db, client, clock=lambda: now[0])
    sync.mark_products(["1", "2", "2"])
    now[0] = T0 + timedelta(seconds=30)
    sync.mark_products(["2"])
    assert len(sync.outbox.pending()) == 2
    assert sync.status().lag_seconds == 30.0  # counted from the first mark

    def products_changing(ids):
        sync.mark_products(["2"])  # product 2 changes again while its older version is in flight
        return load_products(ids)

    assert sync.sync_once(products_changing, load_users).acked == 2
    assert [it.item_id for it in sync.outbox.pending()] == ["2"]


def test_an_outage_keeps_the_outbox_and_it_drains_when_the_cluster_is_back(db):
    cluster = RecordingES()
    client = Flaky(cluster, down=True)
    sync, sleeps = sync_for(db, client)
    sync.mark_products(["1", "2"])
    sync.mark_users(["3"])
    result = sync.sync_once(load_products, load_users)  # the index check itself fails: never raises
    assert result.outage and "ConnectionError" in result.error
    assert sleeps == [0.5, 1.0]  # max_retries = 2, exponential backoff
    client.down = False
    assert sync.sync_once(lambda ids: {}, lambda ids: {}, limit=0).outage is False  # indices made
    for pid in (1, 2):  # the shop's documents (elasticmock ignores doc_as_upsert: it needs them to exist)
        cluster.index(index="products", id=str(pid), body={"shop_title": f"t{pid}"})
    client.down = True
    result = sync.sync_once(load_products, load_users)  # now the bulk fails
    assert result.outage and result.acked == 0
    status = sync.status()
    assert (status.pending, status.failing, status.last_success) == (3, 0, T0)
    assert "ConnectionError" in status.last_error
    assert all(sync.outbox.attempts(k, i) == (0, None) for k, i in (("product", "1"), ("user", "3")))

    client.down, client.fail_times = False, 1  # back after one more refused call, retried in the sync
    sleeps.clear()
    result = sync.sync_once(load_products, load_users)
    assert (result.acked, result.outage, sleeps) == (3, False, [0.5])
    assert sync.status().pending == 0
    assert cluster.get(index="shoppers", id="3")["_source"]["user_vector"] == VEC[3]

    sync.mark_products(["1"])
    result = sync.sync_once(lambda ids: 1 / 0, load_users)  # a failing loader does not raise either
    assert not result.outage and "ZeroDivisionError" in result.error and sync.status().pending == 1


# -- elasticmock round-trips ------------------------------------------------------------------------------
@elasticmock
def test_round_trip_through_elasticmock(db):
    client = elastic.make_client(CFG)  # elasticsearch.Elasticsearch, patched by the decorator, looked up now
    assert isinstance(client, FakeElasticsearch)
    sync = make_elastic_sync(CFG, db, dims=3, client=client, sleep=lambda s: None, clock=lambda: T0)
    assert sync.ensure_indices() == {"products": "created", "shoppers": "created"}
    assert client.indices.exists(index="products") and client.indices.exists(index="shoppers")
    client.index(index="products", id="1", body={"shop_title": "kept by a real cluster"})  # the shop's doc
    client.index(index="products", id="2", body={})
    sync.mark_products(["1", "2", "3"])
    sync.mark_users(["1"])
    docs = {"1": (VEC[1], elastic.product_document(SHOE, popularity=4.5, product_id="1")),
            "2": (VEC[2], elastic.product_document(replace(SHOE, price=None, in_stock=False), product_id="2"))}
    result = sync.sync_once(lambda ids: {**docs, "3": (VEC[3], {})}, load_users)
    # elasticmock ignores doc_as_upsert, so the missing product 3 comes back 404: kept for the next run
    assert (result.acked, result.failed) == (3, 1)
    assert sync.outbox.attempts("product", "3") == (1, "404: document_missing_exception")
    assert client.get(index="products", id="1")["_source"] == {
        "product_id": "1", "name": "Pegasus", "merchant": "Nike", "category_path": ["Shoes", "Running"],
        "categories": ["running", "shoes"], "color": "Blue", "price": 129.0, "in_stock": True,
        "created_at": "2026-01-01T10:00:00", "popularity": 4.5, "product_vector": VEC[1],
    }
    assert client.get(index="shoppers", id="1")["_source"]["user_vector"] == VEC[1]
    hits = elastic.search_feed(client, CFG, None, filters=FeedQuery(categories=("RUNNING",), in_stock=True))
    assert hits == [("1", 1.0)]  # elasticmock does not sort or score: the filters are what is checked here


def test_disabled_adapter_imports_nothing_and_records_nothing(tmp_path: Path):
    code = f"""import sys; from storage.db import Database; from appliance.config_sections import ElasticConfig
from storage.elastic_outbox import make_elastic_sync; db = Database({str(tmp_path / "x.duckdb")!r})
sync = make_elastic_sync(ElasticConfig(**{replace(CFG, enabled=False).__dict__!r}), db, dims=3)
sync.mark_products(["1"]); sync.mark_users(["2"]); print(sync.sync_once(None, None).skipped, sync.status().enabled)
print(db.read("SELECT count(*) FROM elastic_outbox")[0][0], "elasticsearch" in sys.modules)"""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)}).stdout.split()
    assert out == ["True", "False", "0", "False"]
    assert isinstance(make_elastic_sync(replace(CFG, enabled=False), None, dims=3), NoopElasticSync)


# -- queries ----------------------------------------------------------------------------------------------
FILTERS = Filters(categories=("Running", "shoes "), min_price=50.0, max_price=200.0, in_stock=True,
                  exclude=frozenset({"7", "3"}))
FILTER_CLAUSES = [{"terms": {"categories": ["running", "shoes"]}},
                  {"range": {"price": {"gte": 50.0, "lte": 200.0}}}, {"term": {"in_stock": True}}]
EXCLUDE = [{"ids": {"values": ["3", "7"]}}]
SHOP_QUERY = {"match": {"name": "trail"}}


def test_script_score_query_is_the_source_design_body():
    assert elastic.build_script_score_query([0.5, 0.25], page=3, per_page=10) == {
        "query": {"script_score": {
            "query": {"match_all": {}},
            "script": {"source": "cosineSimilarity(params.user_vector, 'product_vector') + 1.0",
                       "params": {"user_vector": [0.5, 0.25]}},
        }},
        "from": 20, "size": 10,
    }
    body = elastic.build_script_score_query([1.0], shop_query=SHOP_QUERY, filters=FILTERS, fallback_sort="price_asc")
    assert body["query"]["script_score"]["query"] == {
        "bool": {"must": [SHOP_QUERY], "filter": FILTER_CLAUSES, "must_not": EXCLUDE}}
    assert "sort" not in body and (body["from"], body["size"]) == (0, 20)


@pytest.mark.parametrize(("sort", "clauses"), [
    (None, [{"popularity": {"order": "desc"}}, {"created_at": {"order": "desc"}}, {"product_id": {"order": "asc"}}]),
    ("price_asc", [{"price": {"order": "asc", "missing": "_last"}}, {"product_id": {"order": "asc"}}]),
    ("price_desc", [{"price": {"order": "desc", "missing": "_last"}}, {"product_id": {"order": "asc"}}]),
])
def test_without_a_user_vector_the_feed_falls_back_to_the_appliance_order(sort, clauses):
    assert elastic.build_script_score_query(None, filters=Filters(in_stock=False), page=2, per_page=5,
                                    fallback_sort=sort) == {
        "query": {"bool": {"must": [{"match_all": {}}], "filter": [{"term": {"in_stock": False}}]}},
        "sort": clauses, "from": 5, "size": 5,
    }


def test_knn_query_body():
    assert elastic.build_knn_query([0.5, 0.25], k=50, num_candidates=200, filters=FILTERS, page=2, per_page=20) == {
        "knn": {"field": "product_vector", "query_vector": [0.5, 0.25], "k": 50, "num_candidates": 200,
                "filter": {"bool": {"filter": FILTER_CLAUSES, "must_not": EXCLUDE}}},
        "from": 20, "size": 20,
    }
    body = elastic.build_knn_query([1.0], num_candidates=10, page=3, per_page=20, shop_query=SHOP_QUERY)
    assert body["knn"]["k"] == 60 and body["knn"]["num_candidates"] == 60
    assert body["knn"]["filter"] == {"bool": {"must": [SHOP_QUERY]}}


@pytest.mark.parametrize("bad", [dict(page=0), dict(per_page=0), dict(fallback_sort="name")])
def test_bad_pages_and_sorts_are_refused(bad):
    pytest.raises(InvalidInput, elastic.build_script_score_query, None, **bad)


@pytest.mark.parametrize(("method", "scores"), [("script_score", [1.9, 1.5]), ("knn", [0.95, 0.75])])
def test_search_feed_returns_ids_and_cosines_in_order(method, scores):
    client = RecordingES()  # ES scores cosine as cos + 1 (script_score) and as (1 + cos) / 2 (knn)
    client.search_response = {"hits": {"hits": [{"_id": "12", "_score": scores[0]}, {"_id": "5", "_score": scores[1]}]}}
    got = elastic.search_feed(client, CFG, [0.5, 0.25], method=method, filters=FILTERS, page=1, per_page=2)
    assert [(pid, round(score, 9)) for pid, score in got] == [("12", 0.9), ("5", 0.5)]
    body = (elastic.build_knn_query([0.5, 0.25], None, 100, FILTERS, 1, 2) if method == "knn"
            else elastic.build_script_score_query([0.5, 0.25], None, FILTERS, 1, 2))
    assert client.calls[-1] == ("search", "products", body, {"_source": False})


def test_search_feed_fallback_scores_are_the_sort_values_and_errors_become_not_ready():
    client = RecordingES()
    client.search_response = {"hits": {"hits": [{"_id": "3", "_score": None, "sort": [7.5, 1, 3]},
                                                {"_id": "4", "_score": None, "sort": [None, 1, 4]}]}}
    assert elastic.search_feed(client, CFG, None, method="knn") == [("3", 7.5), ("4", 0.0)]
    assert client.calls[-1][2] == elastic.build_script_score_query(None)
    with pytest.raises(NotReady, match="elasticsearch"):
        elastic.search_feed(Flaky(client), CFG, [1.0])
