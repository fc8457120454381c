"""Keeping Elasticsearch in step with DuckDB: an outbox table, a bounded-retry bulk sync, its status.

`mark_products` / `mark_users` record what changed (durably, in the same DuckDB file); `sync_once` sends
the pending items in bulk batches and removes an outbox row only when ES acknowledged that item. A
cluster outage leaves the outbox as it was and never raises into the caller: the next run resumes.

    sync = make_elastic_sync(config.elasticsearch, db, dims=config.encoder.dim)  # no-op when disabled
    sync.mark_products(["85123A"])  # the shop's ids: documents are keyed by them
    sync.sync_once(load_product_vectors, load_user_vectors)
    sync.status().pending
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.types import now_utc
from storage.db import Database
from storage.elastic import ElasticConfig, bulk_body, ensure_indices, make_client, product_lines, user_lines

KINDS = ("product", "user")
# The outbox and the cluster know the shop's ids (strings), never the keys inside: a forgotten id's document
# can still be deleted. The loaders translate.
# product id -> (vector, fields), or None while its vector is not computed yet; an id left out is gone.
LoadProducts = Callable[[Sequence[str]], Mapping[str, tuple[Any, Mapping[str, Any]] | None]]
# customer id -> vector, or None while not computed yet; an id left out is gone.
LoadUsers = Callable[[Sequence[str]], Mapping[str, Any]]


@dataclass(frozen=True)
class PendingItem:
    kind: str
    item_id: str
    generation: int  # bumped by each new mark: only the version that was sent is removed


@dataclass(frozen=True)
class SyncResult:
    acked: int = 0  # items ES acknowledged (and removed from the outbox)
    failed: int = 0  # items ES refused (kept, attempts + 1)
    not_ready: int = 0  # items whose vector does not exist yet (kept, not sent)
    outage: bool = False  # the cluster could not be reached: nothing more was tried this time
    error: str | None = None
    skipped: bool = False  # another sync was running, or the adapter is disabled


@dataclass(frozen=True)
class SyncStatus:
    enabled: bool
    pending: int = 0
    failing: int = 0  # pending items whose last attempt ES refused
    lag_seconds: float | None = None  # age of the oldest pending change
    last_success: datetime | None = None  # end of the last sync that reached the cluster throughout
    last_error: str | None = None
    last_error_at: datetime | None = None


class Outbox:
    """The `elastic_outbox` table: one row per (kind, id) waiting to reach Elasticsearch."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def mark(self, kind: str, ids: Sequence[str], now: datetime) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        ids = sorted({str(i) for i in ids})
        if not ids:
            return
        with self.db.write() as cur:
            cur.execute(
                """INSERT INTO elastic_outbox SELECT $1, unnest($2::VARCHAR[]), $3::TIMESTAMP, 0, 0, NULL
                   ON CONFLICT (kind, item_id) DO UPDATE SET generation = generation + 1""",
                [kind, ids, now],
            )

    def pending(self, limit: int | None = None) -> list[PendingItem]:
        rows = self.db.read(
            """SELECT kind, item_id, generation FROM elastic_outbox
               ORDER BY kind, marked_at, item_id LIMIT coalesce(?, 9223372036854775807)""",
            [limit],
        )
        return [PendingItem(*row) for row in rows]

    def ack(self, items: Sequence[PendingItem]) -> None:
        if not items:
            return
        with self.db.write() as cur:
            cur.execute(
                """DELETE FROM elastic_outbox USING (SELECT unnest($1::VARCHAR[]) AS k, unnest($2::VARCHAR[]) AS i,
                       unnest($3::INTEGER[]) AS g) AS s
                   WHERE kind = s.k AND item_id = s.i AND generation = s.g""",
                [[it.kind for it in items], [it.item_id for it in items], [it.generation for it in items]],
            )

    def fail(self, items: Sequence[PendingItem], errors: Sequence[str]) -> None:
        if not items:
            return
        with self.db.write() as cur:
            cur.execute(
                """UPDATE elastic_outbox SET attempts = attempts + 1, last_error = s.e
                   FROM (SELECT unnest($1::VARCHAR[]) AS k, unnest($2::VARCHAR[]) AS i, unnest($3::VARCHAR[]) AS e) s
                   WHERE kind = s.k AND item_id = s.i""",
                [[it.kind for it in items], [it.item_id for it in items], list(errors)],
            )

    def stats(self) -> tuple[int, int, datetime | None]:
        """(pending, failing, oldest marked_at)."""
        return self.db.read(
            "SELECT count(*), count(last_error), min(marked_at) FROM elastic_outbox"
        )[0]

    def attempts(self, kind: str, item_id: str) -> tuple[int, str | None] | None:
        rows = self.db.read(
            "SELECT attempts, last_error FROM elastic_outbox WHERE kind = ? AND item_id = ?", [kind, str(item_id)]
        )
        return rows[0] if rows else None


class _Outage(Exception):
    """The cluster could not be reached after every retry."""


class ElasticSync:
    """The enabled adapter. Thread-safe: marks may come from any thread; one sync runs at a time."""

    enabled = True

    def __init__(
        self,
        config: ElasticConfig,
        db: Database,
        client: Any,
        dims: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.config = config
        self.client = client
        self.dims = dims
        self.outbox = Outbox(db)
        self._sleep = sleep
        self._clock = clock
        self._sync_lock = threading.Lock()
        self._indices_ready = False
        self._last_success: datetime | None = None
        self._last_error: tuple[str, datetime] | None = None

    def mark_products(self, ids: Sequence[str]) -> None:
        self.outbox.mark("product", ids, self._clock())

    def mark_users(self, ids: Sequence[str]) -> None:
        self.outbox.mark("user", ids, self._clock())

    def ensure_indices(self) -> dict[str, str]:
        """Create or extend the indices now (with retries); raises what the last attempt raised."""
        done = self._with_retries(lambda: ensure_indices(self.client, self.config, self.dims))
        self._indices_ready = True
        return done

    def status(self) -> SyncStatus:
        pending, failing, oldest = self.outbox.stats()
        lag = max(0.0, (self._clock() - oldest).total_seconds()) if oldest else None
        error, error_at = self._last_error or (None, None)
        return SyncStatus(True, pending, failing, lag, self._last_success, error, error_at)

    def sync_once(self, load_products: LoadProducts, load_users: LoadUsers, limit: int | None = None) -> SyncResult:
        """Send up to `limit` pending items (all by default) in batches; never raises."""
        if not self._sync_lock.acquire(blocking=False):
            return SyncResult(skipped=True)
        try:
            return self._sync(load_products, load_users, limit)
        except _Outage as exc:
            self._indices_ready = False  # the index may have gone with the cluster: check it again next time
            return self._failed(str(exc), outage=True)
        except Exception as exc:  # a loader or the cluster failing must not reach the scheduler
            return self._failed(f"{type(exc).__name__}: {exc}", outage=False)
        finally:
            self._sync_lock.release()

    # -- internals -------------------------------------------------------------------------------------
    def _failed(self, error: str, outage: bool) -> SyncResult:
        self._last_error = (error, self._clock())
        return SyncResult(outage=outage, error=error)

    def _sync(self, load_products: LoadProducts, load_users: LoadUsers, limit: int | None) -> SyncResult:
        if not self._indices_ready:
            self.ensure_indices()
        acked = failed = not_ready = 0
        items = self.outbox.pending(limit)
        size = self.config.batch_size
        for kind, loader in (("product", load_products), ("user", load_users)):
            of_kind = [it for it in items if it.kind == kind]
            for start in range(0, len(of_kind), size):
                a, f, n = self._send_batch(kind, of_kind[start:start + size], loader)
                acked, failed, not_ready = acked + a, failed + f, not_ready + n
        self._last_success = self._clock()
        return SyncResult(acked=acked, failed=failed, not_ready=not_ready)

    def _send_batch(self, kind: str, batch: list[PendingItem], loader: Callable) -> tuple[int, int, int]:
        loaded = loader([it.item_id for it in batch])
        now = self._clock().isoformat()
        send: list[tuple[PendingItem, list]] = []
        for it in batch:
            if it.item_id in loaded and loaded[it.item_id] is None:
                continue  # its vector is not computed yet: stays pending, not an error
            value = loaded.get(it.item_id)
            if kind == "product":
                vector, fields = value if value is not None else (None, None)
                send.append((it, product_lines(self.config, it.item_id, vector, fields)))
            else:
                send.append((it, user_lines(self.config, it.item_id, value, now)))
        acked: list[PendingItem] = []
        refused: list[tuple[PendingItem, str]] = []
        for attempt in range(self.config.max_retries + 1):
            if not send:
                break
            if attempt:
                self._sleep(self._delay(attempt - 1))
            try:
                response = self.client.bulk(body=bulk_body(line for _, lines in send for line in lines))
            except Exception as exc:
                if attempt == self.config.max_retries or not _transient(exc):
                    raise _Outage(f"bulk to elasticsearch failed: {type(exc).__name__}: {exc}") from exc
                continue
            results = response.get("items") or []
            if len(results) != len(send):
                raise _Outage(f"bulk answer has {len(results)} items for {len(send)} actions")
            retry = []
            for (it, lines), result in zip(send, results, strict=True):
                action, outcome = next(iter(result.items()))
                status = int(outcome.get("status", 500))
                if status < 300 or (action == "delete" and status == 404):  # a missing document is deleted
                    acked.append(it)
                elif status == 429 and attempt < self.config.max_retries:  # the cluster is busy: again
                    retry.append((it, lines))
                else:
                    refused.append((it, f"{status}: {_reason(outcome.get('error'))}"))
            send = retry
        self.outbox.ack(acked)
        self.outbox.fail([it for it, _ in refused], [err for _, err in refused])
        if refused:
            self._last_error = (f"{len(refused)} {kind} item(s) refused, e.g. {refused[0][1]}", self._clock())
        return len(acked), len(refused), len(batch) - len(acked) - len(refused)

    def _with_retries(self, call: Callable[[], Any]) -> Any:
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self._sleep(self._delay(attempt - 1))
            try:
                return call()
            except Exception as exc:
                if attempt == self.config.max_retries or not _transient(exc):
                    if _transient(exc):
                        raise _Outage(f"elasticsearch unreachable: {type(exc).__name__}: {exc}") from exc
                    raise
        raise AssertionError("unreachable")

    def _delay(self, retry: int) -> float:
        """Exponential backoff: backoff_seconds, twice that, ... capped at backoff_max_seconds."""
        return min(self.config.backoff_seconds * 2**retry, self.config.backoff_max_seconds)


class NoopElasticSync:
    """The adapter when `[elasticsearch] enabled = false`: records nothing, sends nothing, imports nothing."""

    enabled = False

    def mark_products(self, ids: Sequence[str]) -> None:
        pass

    def mark_users(self, ids: Sequence[str]) -> None:
        pass

    def ensure_indices(self) -> dict[str, str]:
        return {}

    def sync_once(self, load_products: LoadProducts, load_users: LoadUsers, limit: int | None = None) -> SyncResult:
        return SyncResult(skipped=True)

    def status(self) -> SyncStatus:
        return SyncStatus(False)


def make_elastic_sync(
    config: ElasticConfig,
    db: Database,
    dims: int,
    client: Any = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = now_utc,
) -> ElasticSync | NoopElasticSync:
    """The adapter for a config: a no-op when disabled; otherwise on `client` (default: `make_client`)."""
    if not config.enabled:
        return NoopElasticSync()
    return ElasticSync(config, db, client if client is not None else make_client(config), dims,
                       sleep=sleep, clock=clock)


def _transient(exc: BaseException) -> bool:
    """Worth retrying: the cluster unreachable, timing out, overloaded or restarting."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:  # only reached after a failure of an enabled adapter's client
        from elasticsearch import exceptions as es
    except ImportError:
        return False
    if isinstance(exc, es.ConnectionError):  # also ConnectionTimeout and SSLError
        return True
    return isinstance(exc, es.TransportError) and exc.status_code in (429, 502, 503, 504)


def _reason(error: Any) -> str:
    if isinstance(error, Mapping):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip(": ")
    return str(error)
