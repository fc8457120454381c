"""One writer thread fed by a queue of requests, taken a group at a time (POST /events' group commit, PUT
/products' edits): a request waits on its future, never on a thread of the app's pools."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from appliance.errors import StoreUnavailable

R = TypeVar("R")


class WriterThread(ABC, Generic[R]):
    """Queues requests for `_turn`, which a subclass implements: take a group of `_pending` and write it."""

    def __init__(self, name: str, refusal: str) -> None:
        self._name = name  # the thread's
        self._refusal = refusal  # why a request is refused once closing
        self._pending: list[R] = []
        self._wake = threading.Condition()  # guards _pending and _closed
        self._closed = False
        self._thread: threading.Thread | None = None

    def _queue(self, request: R) -> None:
        with self._wake:
            if self._closed:
                raise StoreUnavailable(self._refusal)
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
                self._started()
            self._wake.notify()

    def _started(self) -> None:
        """Called once the writer thread has started (a subclass starts its helpers here)."""

    def close(self, timeout: float = 30.0) -> None:
        """Take no more requests; the writer writes those already queued, then ends."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return  # closed and drained
            self._turn()

    @abstractmethod
    def _turn(self) -> None:
        """Take a group of `_pending` (under `_wake`) and write it."""
