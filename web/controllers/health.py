"""/health: liveness and readiness probes."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.datastructures import State

from web.access import Scope, needs
from web.schemas import Health


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    opt = needs(Scope.OPEN)

    @get("/live", operation_id="live")
    async def live(self) -> Health:
        """The process answers."""
        return Health("live")

    @get("/ready", operation_id="ready", sync_to_thread=True)
    def ready(self, state: State) -> Response[Health]:
        """Ready once the store is open, the index reconciled and the model loaded (503 until then), and
        while the store can write (503 with the reason when its disk refuses writes)."""
        services = state.services
        if not services.ready.is_set():
            body = Health("failed" if services.startup_error else "starting", detail=services.startup_error)
            return Response(body, status_code=503, headers={"Retry-After": "5"})
        failure = services.db.check()
        if failure:  # a disk that does not take writes: nothing is acknowledged until it does again
            return Response(Health("unavailable", detail=failure), status_code=503, headers={"Retry-After": "5"})
        return Response(Health(
            "ready", products=services.catalog.store.count(), events=services.events.count(),
            pending_embeddings=services.catalog.store.pending_count(), indexed=len(services.index),
        ))
