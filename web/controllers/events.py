"""/events: shopper interactions in the SQS message shape, durable before the response."""

from __future__ import annotations

import asyncio
from collections import Counter

import anyio
from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from appliance.errors import InvalidInput
from appliance.types import now_utc
from jobs.queue import event_body
from web.access import Scope, needs
from web.ids import keyed_events, new_ids
from web.schemas import EventIn, EventsAccepted, each


class EventController(Controller):
    path = "/events"
    tags = ["events"]
    opt = needs(Scope.PUBLIC)

    @post("/", operation_id="postEvents", status_code=HTTP_202_ACCEPTED)
    async def post_events(self, state: State, data: JSONBody[EventIn | list[EventIn]]) -> EventsAccepted:
        """Accept one event or a batch: written to DuckDB with their queue messages in one commit before the 202
        (concurrent requests share a commit); the consumer then refreshes each shopper's vector. An event whose
        `event_id` was stored already (a retry) is not stored again: it counts in `duplicates` and answers with
        the stored event's id."""
        config = state.services.config.events
        batch = data if isinstance(data, list) else [data]
        if not batch:
            raise InvalidInput("the body must hold at least one event", field="$")
        if len(batch) > config.max_batch:
            raise InvalidInput(f"at most {config.max_batch} events per request", field="$")
        now = now_utc()
        stamps = each(batch, lambda item: item.ts(now, config.max_future_seconds), isinstance(data, list))
        services = state.services
        if new_ids(services.ids, batch):  # their keys are created first (a DuckDB write): off the event loop
            events, customers, products = await anyio.to_thread.run_sync(keyed_events, services.ids, batch, stamps)
        else:  # dict look-ups only
            events, customers, products = keyed_events(services.ids, batch, stamps)
        # with their queue messages, in one transaction shared with the requests arriving meanwhile; the writer
        # thread commits it, this request holds no thread while it waits
        bodies = [event_body(*row) for row in zip(events, customers, products, strict=True)]
        written = await asyncio.wrap_future(services.ingest.submit(events, bodies, now))
        stored = [e for e, fresh in zip(events, written.fresh, strict=True) if fresh]
        for name, n in Counter(e.event_name for e in stored).items():
            services.metrics.events_ingested.labels(name).inc(n)
        return EventsAccepted(len(events), written.event_ids, len(events) - len(stored))
