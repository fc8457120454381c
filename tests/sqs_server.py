"""A real local SQS-compatible server for tests: moto's ThreadedMotoServer on 127.0.0.1, boto3 over HTTP."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from moto.server import ThreadedMotoServer

from appliance.config import QueueConfig

REGION = "us-east-1"
ACCESS_KEY = "AKIDSQSTEST"
SECRET = "sqs-secret-do-not-show-7f3a"  # a test checks that no endpoint or log line shows it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(port: int | None = None) -> Iterator[str]:
    """Serve SQS on 127.0.0.1 until the block ends; its endpoint URL. Queues live in moto's process-wide
    state, so a server started again on the same port finds them (an outage, then recovery)."""
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


def make_queues(endpoint: str, *, fifo: bool = False, max_receive_count: int = 2, visibility: int = 1) -> Queues:
    """A fresh queue and its dead-letter queue (redrive policy with `max_receive_count`)."""
    sqs = client(endpoint)
    suffix = ".fifo" if fifo else ""
    name = f"events-{uuid.uuid4().hex[:10]}"
    fifo_attrs = {"FifoQueue": "true"} if fifo else {}
    dlq = sqs.create_queue(QueueName=f"{name}-dead{suffix}", Attributes=fifo_attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)})
    url = sqs.create_queue(QueueName=f"{name}{suffix}", Attributes={
        **fifo_attrs, "VisibilityTimeout": str(visibility), "RedrivePolicy": policy})["QueueUrl"]
    return Queues(url, dlq)


def client(endpoint: str):
    return boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET)


def queue_config(endpoint: str, url: str) -> QueueConfig:
    return QueueConfig(
        backend="sqs", sqs_queue_url=url, sqs_endpoint_url=endpoint, sqs_region=REGION,
        sqs_access_key_id=ACCESS_KEY, sqs_secret_access_key=SECRET, sqs_timeout_seconds=5.0, outbox_batch=10,
        outbox_backoff_seconds=0.1, outbox_backoff_max_seconds=0.5,
    )


def overrides(endpoint: str, url: str) -> dict:
    """load_config overrides for the sqs backend against `url`."""
    c = queue_config(endpoint, url)
    return {"queue": {k: getattr(c, k) for k in c.__dataclass_fields__}}
