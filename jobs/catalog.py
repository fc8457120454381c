"""Catalog writes as the app and the CLI see them: text line + hash, store, embed (now or in the background)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from appliance.text import product_text, text_hash
from appliance.types import Product
from jobs.indexing import CatalogIndexer
from storage.catalog import CatalogStore, UpsertResult


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
        and the index updated; otherwise that is left to the background indexer (or a later `embed_pending`)."""
        lines = [self.line(p) for p in products]
        result = self.store.upsert(products, [t for _, t in lines], [h for h, _ in lines], now)
        if embed_now and result.to_embed:
            cached = self.store.cached_vectors([h for h, _ in lines])
            self.indexer.embed_lines(sorted({(h, t) for h, t in lines if h not in cached}))
        if embed_now and result.new_lines:  # an edit that keeps the text line keeps the vector
            self.indexer.sync_index()
        if result.changed_ids:
            self.on_change(result.changed_ids)
        return result

    def delete(self, product_id: int) -> None:
        self.store.delete(product_id)
        self.indexer.mirror.remove([product_id])  # a sync in flight cannot bring its vector back
        self.on_change([product_id])
