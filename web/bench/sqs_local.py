"""A local SQS-compatible server (moto's ThreadedMotoServer, a dev dependency) on 127.0.0.1, and fresh queues on it:
for `appliance bench ingest --queue sqs` and the SQS tests. Never used by the served appliance."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from web.bench.common import free_port

REGION = "us-east-1"


@contextmanager
def moto_server(port: int | None = None) -> Iterator[str]:
    """Serve SQS on 127.0.0.1 until the block ends; its endpoint URL. Queues live in moto's process-wide
    state, so a server started again on the same port finds them (an outage, then recovery)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass(frozen=True)
class Queues:
    url: str
    dead_letter_url: str


def make_queues(sqs: Any, *, fifo: bool = False, max_receive_count: int = 2, visibility: int = 1) -> Queues:
    """A fresh queue and its dead-letter queue (redrive policy with `max_receive_count`), through boto3 client `sqs`."""
    suffix = ".fifo" if fifo else ""
    name = f"events-{uuid.uuid4().hex[:10]}"
    fifo_attrs = {"FifoQueue": "true"} if fifo else {}
    dlq = sqs.create_queue(QueueName=f"{name}-dead{suffix}", Attributes=fifo_attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)})
    url = sqs.create_queue(QueueName=f"{name}{suffix}", Attributes={
        **fifo_attrs, "VisibilityTimeout": str(visibility), "RedrivePolicy": policy})["QueueUrl"]
    return Queues(url, dlq)
