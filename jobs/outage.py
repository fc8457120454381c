"""A dependency's failing spell (SQS, the store), told once: a warning when it starts, an info when it ends.

Between the two the loop that owns it waits `first` seconds, doubling up to `cap`, and logs each retry at DEBUG
only, so an outage of an hour is two lines in the log, not one traceback a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    """Owned by one loop (a consumer, a sender); `seconds` may be read from any thread (a /metrics scrape)."""

    def __init__(self, what: str, log: logging.Logger, first: float, cap: float,
                 on_start: Callable[[str], None] = lambda cause: None) -> None:
        self.what, self.log, self.cap = what, log, max(cap, 0.01)
        self.first = min(max(first, 0.01), self.cap)
        self.on_start = on_start  # told the cause ("sqs", "store") when a spell starts: a metric counts them
        self.cause: str | None = None  # of the current spell; None while things work
        self._since = 0.0
        self._wait = self.first

    def failed(self, cause: str, detail: str) -> float:
        """One failed try; the seconds to wait before the next one."""
        if cause != self.cause:
            if self.cause is None:
                self._since = time.monotonic()
            self.cause = cause
            self.log.warning("%s waits: %s; retrying, backing off up to %gs", self.what, detail, self.cap)
            self.on_start(cause)
        wait, self._wait = self._wait, min(self._wait * 2, self.cap)
        self.log.debug("%s still waiting (%s); next try in %.2fs", self.what, detail, wait)
        return wait

    def recovered(self) -> None:
        """A try succeeded: ends the spell (an info line saying how long it lasted) if there was one."""
        if self.cause is not None:
            self.log.info("%s works again after %.1fs (was: %s)", self.what, self.seconds, self.cause)
            self.cause = None
        self._wait = self.first

    @property
    def seconds(self) -> float:
        """How long the current spell has lasted (0 while things work)."""
        return time.monotonic() - self._since if self.cause is not None else 0.0
