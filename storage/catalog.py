"""Products and their cached vectors in DuckDB."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from appliance.errors import NotFound
from appliance.types import Product
from storage.db import VECTOR_PAGE, Database, VectorPage, blob_pages, from_blobs, joined, to_blobs

_COLUMNS = "product_id, name, merchant, category_path, color, price, in_stock, created_at"
_ROWS = """SELECT unnest($1::BIGINT[]) AS product_id, unnest($2::VARCHAR[]) AS name, unnest($3::VARCHAR[]) AS merchant,
               unnest($4::VARCHAR[][]) AS category_path, unnest($5::VARCHAR[]) AS color, unnest($6::DOUBLE[]) AS price,
               unnest($7::BOOLEAN[]) AS in_stock, unnest($8::TIMESTAMP[]) AS created_at, $9::TIMESTAMP AS updated_at,
               unnest($10::VARCHAR[]) AS text, unnest($11::VARCHAR[]) AS text_hash"""
_INSERT = f"INSERT INTO products ({_COLUMNS}, updated_at, text, text_hash) {_ROWS}"
# An edit updates its row in place: INSERT OR REPLACE (a delete and an insert through the primary key) cost
# 4.1 ms of CPU per one-product edit at 100k products, an UPDATE of the same columns 2.6-3.0 (BENCHMARKS.md)
_UPDATE = f"""UPDATE products SET name = u.name, merchant = u.merchant, category_path = u.category_path,
                  color = u.color, price = u.price, in_stock = u.in_stock, created_at = u.created_at,
                  updated_at = u.updated_at, text = u.text, text_hash = u.text_hash
              FROM ({_ROWS}) AS u WHERE products.product_id = u.product_id"""


@dataclass(frozen=True, slots=True)
class StoredProduct:
    product: Product
    text: str
    embedded: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UpsertResult:
    created: int
    updated: int
    unchanged: int
    to_embed: int  # distinct new lines with no cached vector yet
    changed_ids: tuple[int, ...] = ()  # products created or updated
    new_lines: int = 0  # products created or whose text line changed (their vector may differ)
    created_ids: tuple[int, ...] = ()  # products created


def _product(row: tuple) -> Product:
    pid, name, merchant, path, color, price, in_stock, created_at = row
    return Product(pid, name, merchant, tuple(path), color, price, in_stock, created_at)


class CatalogStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def upsert(
        self, products: Sequence[Product], texts: Sequence[str], hashes: Sequence[str], now: datetime
    ) -> UpsertResult:
        """Insert new products and update changed ones in one transaction; a product whose row is identical is
        left alone."""
        if not products:
            return UpsertResult(0, 0, 0, 0)
        ids = [p.product_id for p in products]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate product_id in one batch")
        with self.db.write() as cur:
            existing = {
                row[0]: row[1:]
                for row in cur.execute(
                    f"SELECT {_COLUMNS}, text_hash FROM products WHERE product_id IN (SELECT unnest($1::BIGINT[]))",
                    [ids],
                ).fetchall()
            }
            changed = [i for i, p in enumerate(products) if _differs(p, hashes[i], existing.get(p.product_id))]
            for sql, part in ((_INSERT, [i for i in changed if products[i].product_id not in existing]),
                              (_UPDATE, [i for i in changed if products[i].product_id in existing])):
                if part:
                    cur.execute(sql, [
                        [products[i].product_id for i in part], [products[i].name for i in part],
                        [products[i].merchant for i in part], [list(products[i].category_path) for i in part],
                        [products[i].color for i in part], [products[i].price for i in part],
                        [products[i].in_stock for i in part],
                        [products[i].created_at or _created(existing.get(products[i].product_id)) for i in part],
                        now, [texts[i] for i in part], [hashes[i] for i in part],
                    ])
            # the distinct lines minus those already embedded, probed from the few lines' side: `NOT IN (SELECT
            # text_hash FROM embeddings)` hashed the whole table for every edit (5.5 ms of CPU at 100k, 0.9 now)
            to_embed = cur.execute(
                """SELECT len(list_distinct($1::VARCHAR[])) - (SELECT count(*) FROM embeddings
                   WHERE text_hash IN (SELECT DISTINCT unnest($1::VARCHAR[])))""",
                [[hashes[i] for i in changed]],
            ).fetchone()[0]
        created = tuple(products[i].product_id for i in changed if products[i].product_id not in existing)
        relined = sum(1 for i in changed if (e := existing.get(products[i].product_id)) is None or e[7] != hashes[i])
        return UpsertResult(
            len(created), len(changed) - len(created), len(products) - len(changed), to_embed,
            tuple(products[i].product_id for i in changed), relined, created,
        )

    def get(self, product_id: int) -> StoredProduct:
        found = self.stored([product_id])
        if product_id not in found:
            raise NotFound(f"product {product_id} does not exist")
        return found[product_id]

    def stored(self, product_ids: Sequence[int]) -> dict[int, StoredProduct]:
        """Those of these products that exist, with their text line and whether its vector is stored."""
        rows = self.db.read(
            f"""SELECT {_COLUMNS}, text, e.text_hash IS NOT NULL, updated_at
                FROM products p LEFT JOIN embeddings e USING (text_hash)
                WHERE product_id IN (SELECT unnest($1::BIGINT[]))""",
            [list(product_ids)],
        )
        return {row[0]: StoredProduct(_product(row[:8]), row[8], row[9], row[10]) for row in rows}

    def delete(self, product_id: int) -> None:
        with self.db.write() as cur:
            if not cur.execute("DELETE FROM products WHERE product_id = ? RETURNING 1", [product_id]).fetchall():
                raise NotFound(f"product {product_id} does not exist")

    def many(self, product_ids: Sequence[int]) -> list[Product]:
        """The products among these ids that exist."""
        return [_product(row) for row in self.db.read(
            f"SELECT {_COLUMNS} FROM products WHERE product_id IN (SELECT unnest($1::BIGINT[])) ORDER BY product_id",
            [list(product_ids)],
        )]

    def all(self) -> list[Product]:
        return [_product(row) for row in self.db.read(f"SELECT {_COLUMNS} FROM products ORDER BY product_id")]

    def count(self) -> int:
        return self.db.read("SELECT count(*) FROM products")[0][0]

    def pending(self, limit: int) -> list[tuple[str, str]]:
        """(text_hash, text) of lines that have no vector yet, oldest change first."""
        return self.db.read(
            """SELECT text_hash, any_value(text) FROM products
               WHERE text_hash NOT IN (SELECT text_hash FROM embeddings)
               GROUP BY text_hash ORDER BY min(updated_at) LIMIT ?""",
            [limit],
        )

    def pending_count(self) -> int:
        return self.db.read(
            "SELECT count(DISTINCT text_hash) FROM products WHERE text_hash NOT IN (SELECT text_hash FROM embeddings)"
        )[0][0]

    def cached_vectors(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self.db.read(
            "SELECT text_hash, vector FROM embeddings WHERE text_hash IN (SELECT unnest($1::VARCHAR[]))", [list(hashes)]
        )
        return {h: from_blobs([v])[0] for h, v in rows}

    def save_vectors(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        with self.db.write() as cur:
            cur.execute(
                """INSERT OR IGNORE INTO embeddings
                   SELECT * FROM (SELECT unnest($1::VARCHAR[]), unnest($2::BLOB[]))""",
                [list(hashes), to_blobs(vectors)],
            )

    def vector_ids(self) -> np.ndarray:
        """The ids of the embedded products, sorted: `vectors(None)`'s ids without reading a vector."""
        return np.asarray(self.db.read_numpy(
            "SELECT p.product_id FROM products p JOIN embeddings e USING (text_hash) ORDER BY p.product_id"
        )["product_id"], dtype=np.int64)

    def vectors(self, changed_since: datetime | None = None) -> tuple[np.ndarray, np.ndarray, datetime | None]:
        """`vector_pages` in one answer: ids, vectors and the time up to which it is complete."""
        return joined(self.vector_pages(changed_since))

    def vectors_of(self, product_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Ids and vectors of those of these products that are embedded."""
        data = self.db.read_numpy(
            """SELECT p.product_id, e.vector FROM products p JOIN embeddings e USING (text_hash)
               WHERE p.product_id IN (SELECT unnest($1::BIGINT[])) ORDER BY p.product_id""", [list(product_ids)])
        return np.asarray(data["product_id"], dtype=np.int64), from_blobs(data["vector"])

    def vector_pages(self, changed_since: datetime | None = None, rows: int = VECTOR_PAGE) -> Iterator[VectorPage]:
        """Product ids and vectors of embedded products changed since a time (all when None), in pages of `rows`
        read in one snapshot (at least one page, maybe empty): an index sync holds one page at a time.

        Each page also carries the time up to which the answer is complete: the latest change such that no
        product changed at or before it is still waiting for its vector (a later sync resumes from there).
        """
        where, params = ("WHERE p.updated_at > ?", [changed_since]) if changed_since else ("", [])
        with self.db.snapshot() as cur:
            pending_from = cur.execute(
                "SELECT min(updated_at) FROM products WHERE text_hash NOT IN (SELECT text_hash FROM embeddings)"
            ).fetchone()[0]
            done = cur.execute(
                "SELECT max(updated_at) FROM products WHERE ? IS NULL OR updated_at < ?", [pending_from, pending_from]
            ).fetchone()[0]
            result = cur.execute(
                f"""SELECT p.product_id, e.vector FROM products p JOIN embeddings e USING (text_hash)
                    {where} ORDER BY p.product_id""",
                params,
            )
            yield from blob_pages(result, rows, done)


def _created(existing: tuple | None) -> datetime | None:
    """A product sent without created_at keeps the one it had (none for a new product: arrival unknown)."""
    return existing[6] if existing else None


def _differs(product: Product, text_hash: str, existing: tuple | None) -> bool:
    if existing is None:
        return True
    stored = _product((product.product_id, *existing[:7]))
    created = product.created_at or stored.created_at
    return existing[7] != text_hash or stored != Product(
        product.product_id, product.name, product.merchant, tuple(product.category_path), product.color,
        product.price, product.in_stock, created,
    )
