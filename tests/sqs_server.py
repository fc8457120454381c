"""A real local SQS-compatible server for tests: moto's ThreadedMotoServer on 127.0.0.1, boto3 over HTTP."""

from __future__ import annotations

import boto3

from appliance.config_sections import QueueConfig
from web.bench import sqs_local
from web.bench.sqs_local import REGION, Queues

ACCESS_KEY = "AKIDSQSTEST"
SECRET = "sqs-secret-do-not-show-7f3a"  # a test checks that no endpoint or log line shows it


def make_queues(endpoint: str, **kw) -> Queues:
    """A fresh queue and its dead-letter queue on the local server (see web.bench.sqs_local.make_queues)."""
    return sqs_local.make_queues(client(endpoint), **kw)


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
