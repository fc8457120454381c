"""The DuckDB file: one connection per process, writes serialised, a cursor per thread, versioned migrations."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from appliance.errors import StoreLocked, StoreUnavailable
from storage.migrations import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("appliance.store")


def to_blobs(vectors: np.ndarray) -> list[bytes]:
    """Vectors are stored as float32 bytes: 5-10x cheaper to write and read through DuckDB than FLOAT[]."""
    return [row.tobytes() for row in np.ascontiguousarray(vectors, dtype=np.float32)]


def from_blobs(blobs: Sequence[bytes], dim: int | None = None) -> np.ndarray:
    """(N, D) float32 from stored vectors (D from the data when not given)."""
    if not len(blobs):
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)


# vectors per page of an index sync (`vector_pages` of products and users): 12 MiB of float32 at 384-d; the whole
# answer at once held each vector three times over (DuckDB's result, a bytes object, their joined copy)
VECTOR_PAGE = 8192
VectorPage = tuple[np.ndarray, np.ndarray, Any]  # (ids (N,), vectors (N, D), time up to which the answer is complete)


def blob_pages(result: duckdb.DuckDBPyConnection, rows: int, done: Any) -> Iterator[VectorPage]:
    """(ids, vectors, done) of an executed `SELECT id, vector` query, `rows` at a time, at least one page (empty when
    the answer is): one page's Python objects held at once (`fetchnumpy` made a bytes object per vector of the whole
    answer, then a joined copy of them all)."""
    empty = True
    while page := result.fetchmany(rows):
        empty = False
        yield np.fromiter((row[0] for row in page), np.int64, len(page)), from_blobs([row[1] for row in page]), done
    if empty:
        yield np.zeros(0, np.int64), np.zeros((0, 0), np.float32), done


def joined(pages: Iterator[VectorPage]) -> VectorPage:
    """The pages of a paged vector read as one answer (ids, vectors, the last page's time)."""
    got = list(pages)
    if len(got) == 1:
        return got[0]
    return np.concatenate([p[0] for p in got]), np.concatenate([p[1] for p in got]), got[-1][2]


class Database:
    """Owns the single DuckDB connection of the process.

    Reads use a cursor per thread (`read`), so they never wait on ingest; every write goes through
    `write()`, which holds one lock and one transaction, so there is exactly one writer at a time.

    A disk that stops taking writes (read-only, full, failing) turns every write into `StoreUnavailable`
    (nothing acknowledged that is not durable) and `failure` says why. DuckDB invalidates its instance
    after a fatal error (e.g. a CHECKPOINT that cannot write): then reads fail too, and the connection is
    reopened (its WAL replayed) once a probe file can be written in the data directory again; a write or
    `check()` tries that at most once per `RETRY_SECONDS`.
    """

    CHECKPOINT_TRIES = 5
    RETRY_SECONDS = 1.0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._generation = 0  # bumped when the connection is reopened: older thread cursors are dropped
        self._closed = False
        self.failure: str | None = None  # why the store cannot write now, None when it can
        self._invalidated = False  # DuckDB refuses everything until the connection is reopened
        self._retry_at = 0.0
        self._migrate()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"{self.path} is held by another process (is the appliance server running?); "
                    "stop it or send the data through its HTTP API"
                ) from exc
            raise

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (a DuckDB connection sharing the database instance)."""
        held = getattr(self._local, "cursor", None)
        if held is None or held[0] != self._generation:
            with self._cursors_lock:
                cur = self._conn.cursor()
                self._cursors.append(cur)
                held = self._local.cursor = (self._generation, cur)
        return held[1]

    def read(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple]:
        with self._faults():
            return self.cursor().execute(sql, params).fetchall()

    def read_numpy(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> dict[str, Any]:
        with self._faults():
            return self.cursor().execute(sql, params).fetchnumpy()

    @contextmanager
    def snapshot(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Several reads that see one consistent state (a read-only transaction on this thread's cursor)."""
        with self._faults():
            cur = self.cursor()
            cur.begin()
            try:
                yield cur
            finally:
                with suppress(duckdb.Error):
                    cur.rollback()

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction under the writer lock; committed (durable) when the block exits normally.

        Raises StoreUnavailable when the disk does not take the commit (nothing of the block is kept)."""
        with self._write_lock, self._faults():
            self._usable()
            cur = self.cursor()
            cur.begin()
            try:
                yield cur
            except BaseException:
                with suppress(duckdb.Error):
                    cur.rollback()
                raise
            cur.commit()

    def check(self) -> str | None:
        """None when the store can write; otherwise why not (a recovery is tried first, see the class)."""
        if self.failure is None:
            try:
                self._probe()
            except OSError as exc:
                self.failure = f"the data directory {self.path.parent} cannot be written: {exc.strerror}"
                log.error("store unavailable: %s", self.failure)
        if self.failure is not None:
            with self._write_lock, suppress(StoreUnavailable):
                self._usable()
        return self.failure

    @property
    def schema_version(self) -> int:
        return self.read("SELECT max(version) FROM schema_version")[0][0] or 0

    def checkpoint(self) -> bool:
        """Fold the WAL into the file; False when DuckDB kept refusing because another transaction was writing
        (it counts one that drew from a sequence), so the next run does it (DuckDB also checkpoints by itself
        once the WAL passes its threshold). Tried `CHECKPOINT_TRIES` times, the writer lock released between."""
        for attempt in range(self.CHECKPOINT_TRIES):
            with self._write_lock, self._faults():
                self._usable()
                try:
                    self.cursor().execute("CHECKPOINT")
                    return True
                except duckdb.TransactionException as exc:
                    if "other write transactions" not in str(exc):
                        raise
            time.sleep(0.05 * (attempt + 1))
        log.warning("checkpoint deferred: other write transactions stayed active")
        return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock, self._cursors_lock:
            self._close_connection()

    # -- disk faults ---------------------------------------------------------------------------------------
    @contextmanager
    def _faults(self) -> Iterator[None]:
        """Turn DuckDB's I/O failures into StoreUnavailable and remember them (other errors pass through)."""
        try:
            yield
        except duckdb.ConnectionException as exc:  # a cursor closed under a read by a reopen: retry later
            raise StoreUnavailable("the store is being reopened; try again") from exc
        except duckdb.Error as exc:
            message = str(exc)
            fatal = isinstance(exc, duckdb.FatalException) or "invalidated" in message
            if not (fatal or isinstance(exc, duckdb.IOException) or "Failed to commit" in message):
                raise
            self._invalidated = self._invalidated or fatal
            if self.failure is None:
                log.error("store unavailable: %s", message)
            self.failure = f"the store cannot write: {message.splitlines()[0]}"
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
            raise StoreUnavailable(self.failure) from exc

    def _usable(self) -> None:
        """Under the writer lock: pass when healthy or recovered now; raise StoreUnavailable otherwise."""
        if self.failure is None:
            return
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(self.failure)
        self._retry_at = time.monotonic() + self.RETRY_SECONDS
        try:
            self._probe()
            if self._invalidated:
                with self._cursors_lock:
                    self._close_connection()
                    self._conn = self._connect()  # replays the WAL: every acknowledged commit is back
                    self._generation += 1
                self._invalidated = False
        except (OSError, duckdb.Error) as exc:
            self.failure = f"the store cannot write: {str(exc).splitlines()[0]}"
            raise StoreUnavailable(self.failure) from exc
        log.warning("store writable again (was: %s)", self.failure)
        self.failure = None

    def _probe(self) -> None:
        """Write (and remove) a small file beside the database: raises OSError when the disk refuses."""
        probe = self.path.parent / f".{self.path.name}.probe"
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()

    def _close_connection(self) -> None:
        for cur in self._cursors:
            with suppress(duckdb.Error):
                cur.close()
        self._cursors.clear()
        with suppress(duckdb.Error):
            self._conn.close()

    def _migrate(self) -> None:
        with self.write() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP)")
            current = cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {current}, newer than this appliance ({SCHEMA_VERSION})"
                )
            for version in range(current, SCHEMA_VERSION):
                for step in MIGRATIONS[version]:
                    if callable(step):
                        step(cur)
                    else:
                        cur.execute(step)
                cur.execute(
                    "INSERT INTO schema_version VALUES (?, current_localtimestamp())", [version + 1]
                )
