"""/queue: the event queue's depth and its dead letters; /model: the serving user tower."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from web.access import Scope, needs
from web.schemas import DeadLetterOut, ModelOut, QueueOut, Redriven
from web.services import Services


class QueueController(Controller):
    path = "/queue"
    tags = ["queue"]
    opt = needs(Scope.SERVER)

    @get("/", operation_id="queueStats", sync_to_thread=True)
    def stats(self, state: State) -> QueueOut:
        """Depth, in flight, dead-lettered, age of the oldest message, dead letters dropped by the caps."""
        services: Services = state.services
        s = services.queue.stats()
        return QueueOut(s.depth, s.in_flight, s.dead_lettered, s.oldest_age_seconds, services.consumer.processed,
                        s.dead_letters_dropped, services.config.queue.backend, s.outbox_backlog, s.attributes,
                        s.unreachable)

    @get("/dead-letter", operation_id="deadLetters", sync_to_thread=True)
    def dead_letters(
        self, state: State, limit: Annotated[int, Parameter(ge=1, le=1000)] = 100
    ) -> list[DeadLetterOut]:
        """Messages that could not be processed, with the reason."""
        return [
            DeadLetterOut(d.message_id, d.body, d.reason, d.receive_count)
            for d in state.services.queue.dead_letters(limit)
        ]

    @post("/dead-letter/redrive", operation_id="redrive", sync_to_thread=True, status_code=HTTP_200_OK,
          opt=needs(Scope.ADMIN))
    def redrive(self, state: State, limit: Annotated[int | None, Parameter(ge=1)] = None) -> Redriven:
        """Move dead letters back to the queue (all, or the oldest `limit`); admin."""
        return Redriven(state.services.queue.redrive(limit))


class ModelController(Controller):
    path = "/model"
    tags = ["model"]
    opt = needs(Scope.SERVER)

    @get("/", operation_id="model", sync_to_thread=True)
    def model(self, state: State) -> ModelOut:
        """The serving user tower (version, metrics) or the fallback in use, and every candidate."""
        services: Services = state.services
        serving = services.serving.get()
        return ModelOut(
            serving.version, serving.model is None, serving.fallback_reason,
            dict(serving.meta) if serving.meta else None, services.models.candidates(),
        )
