"""/sync: how far the Elasticsearch copy lags behind."""

from __future__ import annotations

from litestar import Controller, get
from litestar.datastructures import State

from web.access import Scope, needs
from web.schemas import SyncOut


class SyncController(Controller):
    path = "/sync"
    tags = ["elasticsearch"]
    opt = needs(Scope.SERVER)

    @get("/", operation_id="syncStatus", sync_to_thread=True)
    def status(self, state: State) -> SyncOut:
        """Pending changes, the age of the oldest (lag), failing items, last success and last error."""
        s = state.services.elastic.status()
        return SyncOut(s.enabled, s.pending, s.failing, s.lag_seconds, s.last_success, s.last_error, s.last_error_at)
