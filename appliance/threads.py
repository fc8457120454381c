"""The background threads one part starts (a popularity refresh, a widget-table build, a triggered job, the
start-up warm-up), each tracked until it ends, so that closing the part stops them: `close` refuses new ones,
sets `stopping` (long work checks it between steps) and joins those running within a bounded wait, naming in
the log any that did not end. A daemon thread left running into interpreter finalization may be inside native
code (torch, hnswlib, DuckDB) when the interpreter tears down: nothing of a closed part should be."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("appliance.threads")


class Threads:
    def __init__(self, owner: str) -> None:
        self.owner = owner  # what the log names: "recommender", "widgets", "jobs", "services"
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._live: set[threading.Thread] = set()

    def start(self, target: Callable[..., object], name: str, *args: object) -> bool:
        """Run `target(*args)` on a new daemon thread named `name`; False once closing (nothing is started)."""
        with self._lock:
            if self.stopping.is_set():
                return False
            thread = threading.Thread(target=self._run, args=(target, args), name=name, daemon=True)
            self._live.add(thread)
            thread.start()
        return True

    def _run(self, target: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            target(*args)
        finally:
            with self._lock:
                self._live.discard(threading.current_thread())

    def close(self, timeout: float) -> list[str]:
        """Start no more; wait up to `timeout` seconds in all for those running. The names of any still
        running afterwards (logged as a warning)."""
        with self._lock:
            self.stopping.set()
            live = list(self._live)
        deadline = time.monotonic() + timeout
        for thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sorted(t.name for t in live if t.is_alive())
        if stuck:
            log.warning("%s closed with %d thread(s) still running after %.0f s: %s", self.owner, len(stuck),
                        timeout, ", ".join(stuck))
        return stuck
