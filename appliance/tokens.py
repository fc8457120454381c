"""Unguessable ids (feed ids, recommendation ids) from the OS's random source, read in blocks.

`secrets.token_urlsafe` makes one getrandom call per id. On a busy server each call gave the GIL back and waited
to get it again behind the background threads: a feed request made three, 11.6 % of the event loop's wall time
under the write streams (BENCHMARKS.md "Feed under load", fifteenth round). Here one call fills a block of
BLOCK bytes and ids are cut from it: the same source and the same strength, one call per ~300 ids."""

from __future__ import annotations

import base64
import os
import threading

BLOCK = 4096


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the block (a forked child must not cut the ids its parent cuts)."""
        self._block, self._at = b"", 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._block):
                self._block, self._at = os.urandom(max(BLOCK, n)), 0
            out = self._block[self._at:self._at + n]
            self._at += n
        return out


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)


def token_urlsafe(nbytes: int) -> str:
    """As `secrets.token_urlsafe(nbytes)`: nbytes random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(_pool.take(nbytes)).rstrip(b"=").decode("ascii")
