"""The optional Elasticsearch side: config, client factory, index mappings, bulk lines and feed queries.

Nothing here imports the `elasticsearch` package at module level: `make_client` imports it when called,
so a shop with `[elasticsearch] enabled = false` never loads it. Everything else works on plain dicts
(the JSON a cluster receives) and on whatever client object it is handed (the real one, elasticmock, a
recording or failing stand-in in tests). The outbox and the sync loop live in `storage.elastic_outbox`.

Product documents carry these fields (the fallback sort and the filters use them):
product_id, name, merchant, category_path, categories (lower-cased names at every level), color, price,
in_stock, created_at, popularity, and the vector under `config.vector_field`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.config_sections import ElasticConfig
from appliance.errors import InvalidInput, NotReady
from appliance.types import Product

SORTS = ("price_asc", "price_desc")
METHODS = ("script_score", "knn")


@dataclass(frozen=True)
class Filters:
    """The feed filters, as in `appliance.recommender.FeedQuery` (which can be passed in its place)."""

    categories: tuple[str, ...] = ()  # any level of the category path, case-insensitive; any of them matches
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    exclude: frozenset[str] = frozenset()  # the shop's product ids (the documents' _id)


def make_client(config: ElasticConfig) -> Any:
    """An `elasticsearch.Elasticsearch` for the configured cluster, the package imported only now.

    The transport does not retry on its own (`max_retries=0`): the sync's backoff decides.
    """
    import elasticsearch  # lazily, and looked up at call time (elasticmock patches this attribute)

    kwargs: dict[str, Any] = {
        "verify_certs": config.verify_certs, "timeout": config.timeout_seconds, "max_retries": 0,
    }
    if config.ca_certs:
        kwargs["ca_certs"] = config.ca_certs
    if config.api_key:
        kwargs["api_key"] = config.api_key
    elif config.username:
        kwargs["http_auth"] = (config.username, config.password)
    return elasticsearch.Elasticsearch(config.url, **kwargs)


# -- index management -----------------------------------------------------------------------------------
def _vector_mapping(dims: int) -> dict[str, Any]:
    return {"type": "dense_vector", "dims": dims, "index": True, "similarity": "cosine"}


def product_mapping(config: ElasticConfig, dims: int) -> dict[str, Any]:
    """The fields the appliance owns in the product index."""
    return {"properties": {
        config.vector_field: _vector_mapping(dims),
        "product_id": {"type": "keyword"},  # the shop's id, also the document _id
        "name": {"type": "text"},
        "merchant": {"type": "keyword"},
        "category_path": {"type": "keyword"},
        "categories": {"type": "keyword"},
        "color": {"type": "keyword"},
        "price": {"type": "double"},
        "in_stock": {"type": "boolean"},
        "created_at": {"type": "date"},
        "popularity": {"type": "double"},
    }}


def user_mapping(config: ElasticConfig, dims: int) -> dict[str, Any]:
    return {"properties": {
        config.user_vector_field: _vector_mapping(dims),
        "customer_id": {"type": "keyword"},
        "updated_at": {"type": "date"},
    }}


def ensure_indices(client: Any, config: ElasticConfig, dims: int) -> dict[str, str]:
    """Create both indices, or add to an existing one only those of our fields it lacks.

    A shop's own fields are never touched (and ES refuses type changes anyway), so an existing field of
    ours is left as it is, except that a vector field of another type or dimension is refused.
    Returns {index: "created" | "updated" | "unchanged"}.
    """
    done = {}
    for index, mapping, field in (
        (config.product_index, product_mapping(config, dims), config.vector_field),
        (config.user_index, user_mapping(config, dims), config.user_vector_field),
    ):
        if not client.indices.exists(index=index):
            client.indices.create(index=index, body={"mappings": mapping})
            done[index] = "created"
            continue
        current = client.indices.get_mapping(index=index)  # {concrete index: {"mappings": {...}}}
        existing = [body.get("mappings", {}).get("properties", {}) for body in current.values()] or [{}]
        for props in existing:
            have = props.get(field)
            if have is not None and (have.get("type") != "dense_vector" or have.get("dims") != dims):
                raise InvalidInput(
                    f"index {index} already maps {field} as {have}, not a dense_vector of {dims} dims",
                    field="elasticsearch.vector_field",
                )
        missing = {k: v for k, v in mapping["properties"].items() if any(k not in p for p in existing)}
        if missing:
            client.indices.put_mapping(index=index, body={"properties": missing})
        done[index] = "updated" if missing else "unchanged"
    return done


# -- documents and bulk lines ---------------------------------------------------------------------------
def vector_list(vector: Sequence[float] | np.ndarray) -> list[float]:
    return np.asarray(vector, dtype=np.float32).tolist()


def product_document(product: Product, popularity: float = 0.0, *, product_id: str) -> dict[str, Any]:
    """The fields of one product as the sync sends them (the vector is added beside them); `product_id` is
    the shop's id (the document's _id), not the key inside."""
    return {
        "product_id": product_id,
        "name": product.name,
        "merchant": product.merchant,
        "category_path": list(product.category_path),
        "categories": sorted({c.strip().lower() for c in product.category_path}),
        "color": product.color,
        "price": product.price,
        "in_stock": product.in_stock,
        "created_at": product.created_at.isoformat() if product.created_at else None,
        "popularity": float(popularity),
    }


def product_lines(config: ElasticConfig, product_id: str, vector: Any, fields: Mapping[str, Any] | None) -> list:
    """A partial update that creates the document when missing: a shop's other fields survive it.

    `vector is None` means the product is gone: its document is deleted.
    """
    meta = {"_index": config.product_index, "_id": product_id}
    if vector is None:
        return [{"delete": meta}]
    doc = {**(fields or {}), config.vector_field: vector_list(vector)}
    return [{"update": meta}, {"doc": doc, "doc_as_upsert": True}]


def user_lines(config: ElasticConfig, customer_id: str, vector: Any, updated_at: str | None = None) -> list:
    """The user index is the appliance's own: each document is replaced whole (or deleted when None)."""
    meta = {"_index": config.user_index, "_id": customer_id}
    if vector is None:
        return [{"delete": meta}]
    return [{"index": meta}, {
        "customer_id": customer_id, "updated_at": updated_at, config.user_vector_field: vector_list(vector),
    }]


def bulk_body(lines: Iterable[Mapping[str, Any]]) -> str:
    """NDJSON: one action line, then (except for delete) one document line; ends with a newline."""
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


# -- queries ----------------------------------------------------------------------------------------------
def _page(page: int, per_page: int) -> dict[str, int]:
    if page < 1:
        raise InvalidInput("page must be 1 or more", field="page")
    if per_page < 1:
        raise InvalidInput("per_page must be 1 or more", field="per_page")
    return {"from": (page - 1) * per_page, "size": per_page}


def filter_clauses(filters: Filters | Any | None) -> tuple[list[dict], list[dict]]:
    """(filter, must_not) clauses for the feed filters; accepts `Filters` or a `FeedQuery`."""
    if filters is None:
        return [], []
    keep: list[dict] = []
    if filters.categories:
        keep.append({"terms": {"categories": sorted({c.strip().lower() for c in filters.categories})}})
    price = {k: v for k, v in (("gte", filters.min_price), ("lte", filters.max_price)) if v is not None}
    if price:
        keep.append({"range": {"price": price}})
    if filters.in_stock is not None:
        keep.append({"term": {"in_stock": filters.in_stock}})
    drop = [{"ids": {"values": [str(i) for i in sorted(filters.exclude)]}}] if filters.exclude else []
    return keep, drop


def base_query(shop_query: Mapping[str, Any] | None, filters: Filters | Any | None) -> dict[str, Any]:
    """The shop's own query (or match_all), wrapped in a bool with the feed filters when there are any."""
    keep, drop = filter_clauses(filters)
    if not keep and not drop:
        return dict(shop_query) if shop_query else {"match_all": {}}
    clauses: dict[str, Any] = {"must": [dict(shop_query) if shop_query else {"match_all": {}}]}
    if keep:
        clauses["filter"] = keep
    if drop:
        clauses["must_not"] = drop
    return {"bool": clauses}


def fallback_sort_clauses(fallback_sort: str | None) -> list[dict[str, Any]]:
    """The appliance's own feed order: popularity, newest first, id; or price with unpriced products last."""
    if fallback_sort is None:
        return [{"popularity": {"order": "desc"}}, {"created_at": {"order": "desc"}}, {"product_id": {"order": "asc"}}]
    if fallback_sort not in SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(SORTS)}", field="sort")
    order = "asc" if fallback_sort == "price_asc" else "desc"
    return [{"price": {"order": order, "missing": "_last"}}, {"product_id": {"order": "asc"}}]


def build_script_score_query(
    user_vector: Sequence[float] | np.ndarray | None,
    shop_query: Mapping[str, Any] | None = None,
    filters: Filters | Any | None = None,
    page: int = 1,
    per_page: int = 20,
    fallback_sort: str | None = None,
    vector_field: str = "product_vector",
) -> dict[str, Any]:
    """Exact cosine ranking of every matching document (brute force inside ES), paged.

    Without a user vector: the same query sorted like the appliance's feed (`fallback_sort` None =
    popularity desc, created_at desc; "price_asc" / "price_desc"). With one, `fallback_sort` is ignored.
    """
    paging = _page(page, per_page)
    query = base_query(shop_query, filters)
    if user_vector is None:
        return {"query": query, "sort": fallback_sort_clauses(fallback_sort), **paging}
    if "'" in vector_field or "\\" in vector_field:
        raise InvalidInput(f"vector field name {vector_field!r} cannot be quoted", field="elasticsearch.vector_field")
    script = {
        "source": f"cosineSimilarity(params.user_vector, '{vector_field}') + 1.0",
        "params": {"user_vector": vector_list(user_vector)},
    }
    return {"query": {"script_score": {"query": query, "script": script}}, **paging}


def build_knn_query(
    user_vector: Sequence[float] | np.ndarray,
    k: int | None = None,
    num_candidates: int = 100,
    filters: Filters | Any | None = None,
    page: int = 1,
    per_page: int = 20,
    vector_field: str = "product_vector",
    shop_query: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Approximate (HNSW) nearest products with the top-level `knn` option of Elasticsearch 8.

    `k` defaults to the end of the requested page; `num_candidates` is raised to `k` when smaller.
    A shop query only restricts the candidates (it goes into the knn filter), so scores stay cosine.
    """
    paging = _page(page, per_page)
    k = paging["from"] + paging["size"] if k is None else k
    if not 1 <= k <= 10_000:
        raise InvalidInput("k must be between 1 and 10000", field="k")
    knn: dict[str, Any] = {
        "field": vector_field, "query_vector": vector_list(user_vector), "k": k,
        "num_candidates": min(max(num_candidates, k), 10_000),
    }
    keep, drop = filter_clauses(filters)
    clauses = {"must": [dict(shop_query)] if shop_query else [], "filter": keep, "must_not": drop}
    if any(clauses.values()):
        knn["filter"] = {"bool": {key: value for key, value in clauses.items() if value}}
    return {"knn": knn, **paging}


def search_feed_page(
    client: Any,
    config: ElasticConfig,
    user_vector: Sequence[float] | np.ndarray | None,
    *,
    method: str = "script_score",
    shop_query: Mapping[str, Any] | None = None,
    filters: Filters | Any | None = None,
    page: int = 1,
    per_page: int = 20,
    fallback_sort: str | None = None,
    k: int | None = None,
) -> tuple[list[tuple[str, float]], int]:
    """([(product_id, score)] in ranking order, total matching), the same shape for both methods; the ids are
    the documents' _id, the shop's product ids.

    Scores: the cosine similarity for a user vector (script_score: _score - 1; knn: 2 * _score - 1, as ES
    scores cosine as (1 + cos) / 2); without one, the first sort value (popularity or price).
    A cluster that cannot answer raises `NotReady`, so the caller can fall back to its own feed.
    """
    if method not in METHODS:
        raise InvalidInput(f"method must be one of {', '.join(METHODS)}", field="method")
    if method == "knn" and user_vector is not None:
        body = build_knn_query(user_vector, k, config.knn_num_candidates, filters, page, per_page,
                               config.vector_field, shop_query)
    else:
        body = build_script_score_query(user_vector, shop_query, filters, page, per_page, fallback_sort,
                                        config.vector_field)
    try:
        response = client.search(index=config.product_index, body=body, _source=False)
    except Exception as exc:  # whatever the client raises, the feed must degrade, not crash
        raise NotReady(f"elasticsearch search failed: {exc}") from exc
    hits = response["hits"]
    total = hits.get("total", 0)
    total = int(total["value"] if isinstance(total, Mapping) else total)
    return [(hit["_id"], _score(hit, user_vector, method)) for hit in hits["hits"]], total


def search_feed(client: Any, config: ElasticConfig, user_vector: Sequence[float] | np.ndarray | None,
                **options: Any) -> list[tuple[str, float]]:
    """[(product_id, score)] in ranking order (`search_feed_page` without the total)."""
    return search_feed_page(client, config, user_vector, **options)[0]


def _score(hit: Mapping[str, Any], user_vector: Any, method: str) -> float:
    if user_vector is None:
        value = (hit.get("sort") or [hit.get("_score")])[0]
        return float(value) if value is not None else 0.0
    score = float(hit["_score"])
    return 2.0 * score - 1.0 if method == "knn" else score - 1.0
