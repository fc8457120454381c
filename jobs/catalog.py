"""Catalog writes as the app and the CLI see them: text line + hash, store, embed (now or in the background)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from appliance.text import product_text, text_hash
from appliance.types import Product, now_utc
from jobs.indexing import CatalogIndexer
from storage.catalog import CatalogStore, UpsertResult


@dataclass
class ImportedProducts:
    products: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    embedded: int = 0  # distinct lines encoded (the others had a vector cached under their text hash)


class CatalogService:
    def __init__(
        self,
        store: CatalogStore,
        indexer: CatalogIndexer,
        thresholds: Sequence[float],
        on_change: Callable[[Sequence[int]], None] = lambda ids: None,
    ) -> None:
        self.store = store
        self.indexer = indexer
        self.thresholds = tuple(thresholds)
        self.on_change = on_change  # told the ids of created, updated or deleted products

    def line(self, product: Product) -> tuple[str, str]:
        """(text_hash, text) of a product under the configured model."""
        text = product_text(product, self.thresholds)
        return text_hash(self.indexer.encoder.model, text), text

    def upsert(self, products: Sequence[Product], now: datetime, embed_now: bool) -> UpsertResult:
        """Store products in one transaction. With embed_now their new lines are encoded before returning
        and the index updated; otherwise that is left to the background indexer (or a later `embed`)."""
        lines = [self.line(p) for p in products]
        result = self.store.upsert(products, [t for _, t in lines], [h for h, _ in lines], now)
        if embed_now:
            self._embed(lines, result)
        if result.changed_ids:
            self.on_change(result.changed_ids)
        return result

    def embed(self, products: Sequence[Product], result: UpsertResult) -> None:
        """What `upsert(products, ..., embed_now=True)` does after its transaction, for an `upsert` made without:
        the new lines encoded, the changed products' vectors in the index."""
        if result.new_lines:
            self._embed([self.line(p) for p in products], result)

    def _embed(self, lines: Sequence[tuple[str, str]], result: UpsertResult) -> None:
        if result.to_embed:
            cached = self.store.cached_vectors([h for h, _ in lines])
            self.indexer.embed_lines(sorted({(h, t) for h, t in lines if h not in cached}))
        if result.new_lines:  # an edit that keeps the text line keeps the vector
            self.indexer.sync_products(result.changed_ids)

    def import_products(
        self, chunks: Iterable[Sequence[Product]], progress: Callable[[int], None] = lambda n: None
    ) -> ImportedProducts:
        """A bulk import, one chunk at a time so memory holds one chunk, not the file: each chunk is stored in one
        transaction, its new lines encoded in one call (sorted by length inside it, so batches carry little
        padding) and its vectors added to the index; the index is saved once at the end. A run cut short keeps
        the chunks it finished, embedded and indexed: running it again skips them as unchanged, and first embeds
        whatever an earlier run stored without a vector."""
        done = ImportedProducts(embedded=self.indexer.embed_pending())
        self.indexer.sync_index()
        for chunk in chunks:
            result = self.upsert(chunk, now_utc(), embed_now=True)  # embedded and indexed, chunk by chunk
            done.products += len(chunk)
            done.created += result.created
            done.updated += result.updated
            done.unchanged += result.unchanged
            done.embedded += result.to_embed
            progress(len(chunk))
        self.indexer.sync_index()  # moves `synced_until` past the chunks (their vectors are in, so none is added)
        self.indexer.index.save_if_dirty()
        return done

    def delete(self, product_id: int) -> None:
        self.store.delete(product_id)
        self.indexer.mirror.remove([product_id])  # a sync in flight cannot bring its vector back
        self.on_change([product_id])
