"""Stopping cleanly: nothing the start-up froze out of the garbage collector outlives close().

Frozen objects are never finalised at interpreter exit, and DuckDB's bindings (nanobind) then report every
connection and type they hold as leaked on stderr: the noise that ended `make test`.
"""

from __future__ import annotations

import gc
import threading

from litestar.testing import TestClient

from tests.helpers import wait_until
from web.services import _warm_feeds


def test_a_warm_up_that_ends_after_close_began_freezes_nothing(client: TestClient) -> None:
    services = client.app.state.services
    wait_until(lambda: not any(t.name == "feed-warm" for t in threading.enumerate()), what="the start-up warm-up")
    services.closing = True  # as close() does first: a warm-up finishing after this must not freeze
    gc.unfreeze()  # what the start-up's own warm-up froze (close() unfreezes it too)
    _warm_feeds(services)  # the real warm-up, over the open store
    assert gc.get_freeze_count() == 0

