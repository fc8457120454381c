"""A queued message's body read as POST /events reads its body: the same fields, types and bounds.

Bodies reach the consumer from our outbox (checked at POST /events already) or from a shop backend publishing
straight to SQS (checked nowhere else): both pass EventIn here, so an event is stored only if POST /events
would have taken it, and a message that fails goes to the dead-letter queue with the check's words as reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from appliance.errors import InvalidInput
from appliance.ids import shop_id
from jobs.queue import BodyEvent
from web.errors import field_of
from web.schemas import EventIn


def queued_event(body: Any, sent_at: datetime, max_future_seconds: float) -> BodyEvent:
    """The event of a message body sent at `sent_at` (naive UTC): its timestamp from 1970 to max_future_seconds
    after the sending (none: the sending time); InvalidInput naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidInput(f"the body is not a JSON object: {str(body)[:100]!r}", field="$")
    try:
        row = msgspec.convert(body, EventIn)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), field=field_of(str(exc)) or "$") from None
    return BodyEvent(shop_id(row.customer_id, "customer_id"), shop_id(row.product_id, "product_id"), row.event_name,
                     row.ts(sent_at, max_future_seconds), row.recommendation_id, row.position, row.event_id)
