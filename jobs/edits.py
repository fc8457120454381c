"""PUT /products/{id}'s write path: concurrent edits share one catalog transaction, written by one writer thread.

An edit is still durable, embedded and indexed before its answer (as `CatalogService.upsert(embed_now=True)` does
for one product): its future resolves once the group holding it has committed, its new text line (if any) is
encoded and its vector is in the index. While a group is written, the edits arriving meanwhile queue up and the
writer takes them all next, so under load one transaction carries several edits instead of one each. A group with
a new text line is handed to a second thread for its encoding (~0.1-1.5 s here) and index update, so the edits
behind it (a price, a stock flag: no new line) are not held up by the encoder.

Why (BENCHMARKS.md "Tenth round"): an edit ran on one of the event loop's 6 worker threads and held it while it
waited for DuckDB's writer lock behind the group commit and the consumer. Under 500 events/s its transaction held
the lock ~80 ms of wall time for ~11 ms of CPU (each DuckDB call gives up the GIL and waits to retake it), 10 edits/s
took most of the lock's time, 6 threads could not keep up and edits queued for seconds for a thread. Here an edit
holds no thread while it waits, and a group pays the lock, the GIL hand-offs and the commit once.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from appliance.errors import NotFound
from appliance.types import Product
from jobs.catalog import CatalogService
from jobs.writer_thread import WriterThread
from storage.catalog import StoredProduct, UpsertResult


@dataclass(frozen=True, slots=True)
class Edited:
    created: bool  # the product was new
    stored: StoredProduct  # as stored once committed (and embedded)


@dataclass(eq=False)
class _Edit:
    product: Product  # keyed
    received_at: datetime
    future: Future[Edited] = field(default_factory=Future)


class EditCommit(WriterThread[_Edit]):
    def __init__(self, catalog: CatalogService, max_products: int = 100) -> None:
        super().__init__("catalog-writer", "the server is stopping: edits are not taken any more")
        self.catalog = catalog
        self.max_products = max_products  # edits per transaction at most
        self._to_embed: queue.Queue[tuple[list[_Edit], UpsertResult] | None] = queue.Queue()
        self._embedder: threading.Thread | None = None
        self.commits = 0  # groups written
        self.edits = 0

    def submit(self, product: Product, received_at: datetime) -> Future[Edited]:
        """Queue one keyed product for the next group; the future holds it as stored once committed and embedded.
        Edits of one product are written in the order they were submitted (never two in one group)."""
        edit = _Edit(product, received_at)
        edit.future.set_running_or_notify_cancel()  # a client that goes away cannot take its edit back out
        self._queue(edit)
        return edit.future

    def _started(self) -> None:
        self._embedder = threading.Thread(target=self._embed, name="catalog-embedder", daemon=True)
        self._embedder.start()

    def close(self, timeout: float = 30.0) -> None:
        """Take no more edits; the writer writes those already queued (and they are embedded), then both end."""
        super().close(timeout)
        if self._embedder is not None:
            self._to_embed.put(None)
            self._embedder.join(timeout)

    def _turn(self) -> None:
        self._write(self._take())

    def _take(self) -> list[_Edit]:
        """The oldest pending edits, one per product: a later edit of a product already in the group waits for the
        next one (so it is written after, and wins)."""
        with self._wake:
            group, keys, rest = [], set(), []
            for edit in self._pending:
                key = edit.product.product_id
                if key in keys or len(group) >= self.max_products:
                    rest.append(edit)
                    continue
                keys.add(key)
                group.append(edit)
            self._pending = rest
            return group

    def _write(self, group: list[_Edit]) -> None:
        try:
            result = self.catalog.upsert([e.product for e in group], max(e.received_at for e in group),
                                         embed_now=False)
        except Exception as exc:  # as a PUT alone was (before its commit or in the view patch after it)
            self._fail(group, exc)
            return
        self.commits += 1
        self.edits += len(group)
        if result.new_lines:
            self._to_embed.put((group, result))
        else:
            self._answer(group, result)

    def _embed(self) -> None:
        while (job := self._to_embed.get()) is not None:
            group, result = job
            try:
                self.catalog.embed([e.product for e in group], result)
            except Exception as exc:  # stored, not embedded: the background indexer embeds the line later
                self._fail(group, exc)
                continue
            self._answer(group, result)

    def _answer(self, group: list[_Edit], result: UpsertResult) -> None:
        try:
            stored = self.catalog.store.stored([e.product.product_id for e in group])
        except Exception as exc:
            self._fail(group, exc)
            return
        created = set(result.created_ids)
        for edit in group:
            key = edit.product.product_id
            if key in stored:
                edit.future.set_result(Edited(key in created, stored[key]))
            else:  # deleted (DELETE /products/{id}) between the commit and the read-back
                edit.future.set_exception(NotFound(f"product {key} does not exist"))

    @staticmethod
    def _fail(group: list[_Edit], exc: Exception) -> None:
        for edit in group:
            edit.future.set_exception(exc)
