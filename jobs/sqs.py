"""The queue on Amazon SQS (or a compatible server), with the consumer-facing methods of DurableQueue.

`POST /events` writes each message into the DuckDB outbox (storage/sqs_outbox.py) in the transaction of
its event; `OutboxSender` drains it to SQS in batches of up to 10, backing off while SQS is unreachable,
so an outage delays personalisation and loses nothing. A FIFO queue (URL ending in ``.fifo``) gets one
message group per shopper and the outbox row as deduplication id (a resend after a lost reply is dropped
by SQS); a standard queue may deliver a message twice, which only recomputes a vector again.

The consumer receives with long polling and the queue's visibility timeout, deletes on success; SQS
counts receives and moves a message to the dead-letter queue of the redrive policy after maxReceiveCount.
A message that can never succeed is sent to that queue at once, its reason in the message attribute
``reason``. Credentials come from config or the standard AWS chain, and are never logged or shown.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import duckdb

from appliance.config import Config
from appliance.config_sections import QueueConfig
from appliance.errors import InvalidInput, QueueUnavailable
from appliance.types import now_utc
from jobs.outage import Outage
from jobs.queue import MAX_BATCH, DeadLetter, DurableQueue, QueueStats, Received, _group
from storage.db import Database
from storage.sqs_outbox import SqsOutbox

log = logging.getLogger(__name__)

COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
# Our outbox marks its messages (their events are stored); a message without the mark was published by the shop.
ORIGIN = {"origin": {"DataType": "String", "StringValue": "appliance"}}


def sqs_client(config: QueueConfig) -> Any:
    """A boto3 SQS client from config, else the standard AWS environment (boto3 imported only here)."""
    import boto3
    from botocore.config import Config as BotoConfig

    # botocore's DEBUG lines carry each signed request's headers (the access key id): never in our log
    logging.getLogger("botocore").setLevel(max(logging.getLogger("botocore").getEffectiveLevel(), logging.INFO))

    options: dict[str, Any] = {}
    if config.sqs_endpoint_url:
        options["endpoint_url"] = config.sqs_endpoint_url
    if config.sqs_region:
        options["region_name"] = config.sqs_region
    if config.sqs_access_key_id:
        options["aws_access_key_id"] = config.sqs_access_key_id
        options["aws_secret_access_key"] = config.sqs_secret_access_key
    # The read time-out must outlast a 20 s long poll.
    timeouts = BotoConfig(connect_timeout=config.sqs_timeout_seconds, read_timeout=config.sqs_timeout_seconds + 20,
                          retries={"max_attempts": 2})
    return boto3.client("sqs", config=timeouts, **options)


@contextmanager
def _reaching_sqs() -> Iterator[None]:
    """SQS unreachable or refusing (botocore's errors) -> QueueUnavailable, what the consumer waits out."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise QueueUnavailable(f"SQS unreachable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc


def _ms(value: str | None) -> datetime:
    """An SQS epoch-milliseconds attribute as naive UTC (now when absent)."""
    if not value:
        return now_utc()
    return datetime.fromtimestamp(int(value) / 1000, UTC).replace(tzinfo=None)


class SqsQueue:
    """DurableQueue's contract over an SQS queue; thread-safe (a boto3 client may be shared by threads)."""

    def __init__(self, db: Database, client: Any, config: QueueConfig,
                 on_outage: Callable[[str], None] = lambda cause: None) -> None:
        self.client = client
        self.url = config.sqs_queue_url
        self.fifo = self.url.endswith(".fifo")
        self.outbox = SqsOutbox(db)
        self.sender = OutboxSender(self, config, on_outage)
        self._held: dict[str, tuple[str, str | None, str]] = {}  # receipt handle -> (body, group, message id)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._dlq_url: str | None = None

    def dead_letter_url(self) -> str:
        """The dead-letter queue of the queue's redrive policy (looked up once); InvalidInput without one."""
        if self._dlq_url is None:
            attrs = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["RedrivePolicy"])
            policy = attrs.get("Attributes", {}).get("RedrivePolicy")
            if not policy:
                raise InvalidInput("the SQS queue has no redrive policy: it needs a dead-letter queue",
                                   field="queue.sqs_queue_url")
            arn = json.loads(policy)["deadLetterTargetArn"]
            name, account = arn.split(":")[-1], arn.split(":")[-2]
            self._dlq_url = self.client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        return self._dlq_url

    # -- sending (through the outbox) ------------------------------------------------------------------

    def enqueue_in(
        self, cur: duckdb.DuckDBPyConnection, bodies: Sequence[dict], dedup_ids: Sequence[str | None] | None = None
    ) -> list[str]:
        """Write messages to the outbox inside the caller's transaction; the sender takes them to SQS."""
        texts = [json.dumps(b, separators=(",", ":")) for b in bodies]
        self.outbox.insert_in(cur, texts, [_group(b) for b in bodies], now_utc())
        self.sender.kick()
        return []

    def send_entries(self, rows: Sequence[tuple[str, str | None, str, str]], queue_url: str | None = None,
                     attributes: dict | None = None) -> set[str]:
        """SendMessageBatch of (entry id, group, body, deduplication id) rows; the entry ids SQS accepted.
        Group and deduplication id are used on a FIFO queue only (a message without a group gets its own)."""
        entries = []
        for entry_id, group, body, dedup_id in rows:
            entry: dict[str, Any] = {"Id": entry_id, "MessageBody": body}
            if self.fifo:
                entry["MessageGroupId"] = group or f"ungrouped-{dedup_id}"
                entry["MessageDeduplicationId"] = dedup_id
            if attributes:
                entry["MessageAttributes"] = attributes
            entries.append(entry)
        reply = self.client.send_message_batch(QueueUrl=queue_url or self.url, Entries=entries)
        for failure in reply.get("Failed", []):
            log.warning("SQS refused outbox row %s: %s", failure.get("Id"), failure.get("Code"))
        return {s["Id"] for s in reply.get("Successful", [])}

    # -- receiving -------------------------------------------------------------------------------------

    def receive(self, max_messages: int = MAX_BATCH, wait_seconds: float = 0.0,
                visibility_timeout: float | None = None) -> list[Received]:
        if self._closed.is_set():
            return []
        options: dict[str, Any] = {}
        if visibility_timeout is not None:
            options["VisibilityTimeout"] = int(visibility_timeout)
        with _reaching_sqs():
            reply = self.client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=min(max_messages, MAX_BATCH),
                WaitTimeSeconds=min(int(wait_seconds), 20),  # SQS long polls 20 s at most
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId",
                                             "MessageDeduplicationId"],
                MessageAttributeNames=["origin"], **options,
            )
        out = []
        for m in reply.get("Messages", []):
            attrs = m.get("Attributes", {})
            with self._lock:
                self._held[m["ReceiptHandle"]] = (m["Body"], attrs.get("MessageGroupId"), m["MessageId"])
            try:
                body = json.loads(m["Body"])
            except ValueError:
                body = m["Body"]  # not JSON: the consumer's check says so
            ours = m.get("MessageAttributes", {}).get("origin", {}).get("StringValue") == "appliance"
            # the shop's own message: stored once per deduplication id (FIFO) or message id (redeliveries)
            arrival = None if ours else f"sqs:{attrs.get('MessageDeduplicationId') or m['MessageId']}"
            out.append(Received(m["MessageId"], m["ReceiptHandle"], body,
                                int(attrs.get("ApproximateReceiveCount", 1)), _ms(attrs.get("SentTimestamp")), arrival))
        return out

    def delete_batch(self, receipt_handles: Sequence[str]) -> list[bool]:
        done: set[str] = set()
        for i in range(0, len(receipt_handles), MAX_BATCH):
            chunk = list(receipt_handles[i:i + MAX_BATCH])
            with _reaching_sqs():
                reply = self.client.delete_message_batch(
                    QueueUrl=self.url, Entries=[{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(chunk)]
                )
            done.update(chunk[int(s["Id"])] for s in reply.get("Successful", []))
        with self._lock:
            for h in receipt_handles:
                self._held.pop(h, None)
        return [h in done for h in receipt_handles]

    def delete_batch_in(
        self, cur: duckdb.DuckDBPyConnection, receipt_handles: Sequence[str]
    ) -> Callable[[], list[bool]]:
        """SQS is outside DuckDB's transaction: the returned call deletes, once the caller's transaction has committed.
        A crash between the two delivers the messages again, whose vectors are then computed again (at least once)."""
        return lambda: self.delete_batch(receipt_handles)

    def receive_in(self, cur: duckdb.DuckDBPyConnection, max_messages: int) -> Callable[[], list[Received]]:
        """A receive from SQS is an HTTP call, never made inside a DuckDB transaction (it would hold the writer
        lock for a round trip): nothing is taken ahead, the consumer's next `receive` asks SQS."""
        return lambda: []

    def delete(self, receipt_handle: str) -> bool:
        return self.delete_batch([receipt_handle])[0]

    def fail(self, receipt_handle: str, reason: str) -> bool:
        """Send the message to the dead-letter queue with `reason` (attribute "reason"), then delete it here."""
        with self._lock:
            held = self._held.get(receipt_handle)
        if held is None:
            return False
        body, group, message_id = held
        attributes = {"reason": {"DataType": "String", "StringValue": reason[:1000]}}
        with _reaching_sqs():
            sent = self.send_entries([("0", group, body, f"dead-{message_id}")], self.dead_letter_url(), attributes)
        return bool(sent) and self.delete(receipt_handle)

    # -- inspecting and the dead-letter queue ----------------------------------------------------------

    def attributes(self) -> dict[str, str]:
        """The SQS queue's attributes an operator reads (no credentials): counts, timeouts, redrive policy."""
        names = [*COUNTS, "VisibilityTimeout", "ReceiveMessageWaitTimeSeconds", "RedrivePolicy", "FifoQueue",
                 "MessageRetentionPeriod"]
        return self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=names).get("Attributes", {})

    def stats(self) -> QueueStats:
        """SQS's approximate counts and attributes, and the outbox backlog (told even while SQS is down);
        the oldest age is the outbox's oldest row (SQS keeps message ages in CloudWatch)."""
        from botocore.exceptions import BotoCoreError, ClientError

        backlog, oldest = self.outbox.backlog()
        age = max((now_utc() - oldest).total_seconds(), 0.0) if oldest else 0.0
        try:
            attrs = self.attributes()
            dead = self.client.get_queue_attributes(QueueUrl=self.dead_letter_url(), AttributeNames=[COUNTS[0]])
        except (BotoCoreError, ClientError) as exc:
            return QueueStats(0, 0, 0, age, 0, backlog, None, type(exc).__name__)
        return QueueStats(int(attrs.get(COUNTS[0], 0)), int(attrs.get(COUNTS[1], 0)),
                          int(dead["Attributes"].get(COUNTS[0], 0)), age, 0, backlog, attrs)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` (at most 10) dead letters, peeked: received with a zero visibility timeout."""
        reply = self.client.receive_message(
            QueueUrl=self.dead_letter_url(), MaxNumberOfMessages=min(limit, MAX_BATCH), VisibilityTimeout=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"], MessageAttributeNames=["All"],
        )
        out = []
        for m in reply.get("Messages", []):
            reason = m.get("MessageAttributes", {}).get("reason", {}).get("StringValue") or "maxReceiveCount reached"
            try:
                body = json.loads(m["Body"])
            except ValueError:
                body = {"body": m["Body"]}
            sent = _ms(m.get("Attributes", {}).get("SentTimestamp"))
            count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1))
            out.append(DeadLetter(m["MessageId"], body, reason, count, sent, sent))
        return out

    def redrive(self, limit: int | None = None) -> int:
        """Move dead letters back to the queue, 10 at a time; how many were moved."""
        moved, dlq = 0, self.dead_letter_url()
        while limit is None or moved < limit:
            want = MAX_BATCH if limit is None else min(MAX_BATCH, limit - moved)
            reply = self.client.receive_message(QueueUrl=dlq, MaxNumberOfMessages=want,
                                                MessageSystemAttributeNames=["MessageGroupId"])
            messages = reply.get("Messages", [])
            if not messages:
                return moved
            rows = [(str(n), m.get("Attributes", {}).get("MessageGroupId"), m["Body"], f"redrive-{uuid.uuid4()}")
                    for n, m in enumerate(messages)]
            sent = self.send_entries(rows)
            done = [{"Id": n, "ReceiptHandle": messages[int(n)]["ReceiptHandle"]} for n in sorted(sent)]
            if done:
                self.client.delete_message_batch(QueueUrl=dlq, Entries=done)
            moved += len(done)
        return moved

    def release_in_flight(self) -> int:
        """Nothing to do: other consumers may hold SQS messages; the visibility timeout returns them."""
        return 0

    def purge_customer_in(self, cur: duckdb.DuckDBPyConnection, customer_id: str) -> int:
        """Drop a customer's messages still in the outbox; those in SQS find the id unmapped and are done."""
        return self.outbox.purge_group_in(cur, customer_id)

    def start(self) -> None:
        """Start the outbox sender. A queue without a redrive policy is refused; SQS unreachable is not (the
        outbox holds the messages, and the dead-letter queue is looked up when first needed)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.dead_letter_url()
        except (BotoCoreError, ClientError) as exc:
            log.warning("SQS unreachable at start (%s); events wait in the outbox", type(exc).__name__)
        self.sender.start()

    def close(self) -> None:
        self._closed.set()
        self.sender.stop()


class OutboxSender:
    """Drains the outbox to SQS, oldest first; after a failure waits backoff, doubling up to its maximum (one
    warning when SQS starts failing, one info when it takes messages again)."""

    def __init__(self, queue: SqsQueue, config: QueueConfig, on_outage: Callable[[str], None]) -> None:
        self.queue = queue
        self.batch = config.outbox_batch
        self.outage = Outage("SQS outbox sender", log, config.outbox_backoff_seconds,
                             config.outbox_backoff_max_seconds, on_outage)
        self.sent = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-outbox", daemon=True)

    def kick(self) -> None:
        self._wake.set()

    def drain_once(self) -> int:
        """Send one batch; how many SQS accepted (raises when SQS cannot be reached)."""
        rows = self.queue.outbox.oldest(self.batch)
        if not rows:
            return 0
        entries = [(str(i), g, b, f"outbox-{i}") for i, g, b in rows]
        sent = {int(i) for i in self.queue.send_entries(entries, attributes=ORIGIN)}
        if sent:
            self.queue.outbox.sent(sorted(sent))
        refused = [r[0] for r in rows if r[0] not in sent]
        if refused:
            self.queue.outbox.failed(refused)
        self.sent += len(sent)
        return len(sent)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.drain_once()
                self.outage.recovered()
                if sent:
                    continue
                self.last_error = None
                self._wake.wait(1.0)
                self._wake.clear()
            except Exception as exc:  # SQS unreachable or refusing: the rows stay in DuckDB
                self.last_error = type(exc).__name__
                self._stop.wait(self.outage.failed("sqs", f"send failed ({type(exc).__name__})"))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def make_queue(config: Config, db: Database,
               on_outage: Callable[[str], None] = lambda cause: None) -> DurableQueue | SqsQueue:
    """The event queue `[queue] backend` names: the in-process DuckDB queue, or SQS through the outbox (whose
    sender tells `on_outage` when SQS starts failing)."""
    realtime = config.realtime
    if config.queue.backend == "sqs":
        return SqsQueue(db, sqs_client(config.queue), config.queue, on_outage)
    return DurableQueue(
        db, visibility_timeout=realtime.visibility_timeout_seconds, max_receive_count=realtime.max_receive_count,
        receive_limit=max(realtime.consumer_batch, 10), dead_letter_max=realtime.dead_letter_max,
        dead_letter_retention=realtime.dead_letter_retention_days * 86400,
    )
