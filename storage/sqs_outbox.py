"""The SQS outbox: messages committed in DuckDB with their events, until the sender has them in SQS.
(The keys of events that arrived by SQS alone, so a message delivered twice stores one event, are the events'
keys: storage/events.py.)

`insert_in` writes inside the caller's transaction (the events and their messages commit together), so an
SQS outage delays messages but loses none. The sender reads the oldest rows, sends them, then deletes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb

from storage.db import Database


class SqsOutbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def insert_in(
        cur: duckdb.DuckDBPyConnection, bodies: Sequence[str], groups: Sequence[str | None], now: datetime
    ) -> None:
        if bodies:
            cur.execute(
                """INSERT INTO sqs_outbox (group_id, body, queued_at)
                   SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), $3::TIMESTAMP""",
                [list(groups), list(bodies), now],
            )

    def oldest(self, limit: int) -> list[tuple[int, str | None, str]]:
        """(outbox_id, group_id, body) of the oldest rows, oldest first."""
        return self.db.read(
            "SELECT outbox_id, group_id, body FROM sqs_outbox ORDER BY outbox_id LIMIT $1", [limit]
        )

    def sent(self, outbox_ids: Sequence[int]) -> None:
        with self.db.write() as cur:
            cur.execute("DELETE FROM sqs_outbox WHERE outbox_id IN (SELECT unnest($1::BIGINT[]))", [list(outbox_ids)])

    def failed(self, outbox_ids: Sequence[int]) -> None:
        with self.db.write() as cur:
            cur.execute(
                "UPDATE sqs_outbox SET attempts = attempts + 1 WHERE outbox_id IN (SELECT unnest($1::BIGINT[]))",
                [list(outbox_ids)],
            )

    def backlog(self) -> tuple[int, datetime | None]:
        """(rows waiting, queued_at of the oldest)."""
        return self.db.read("SELECT count(*), min(queued_at) FROM sqs_outbox")[0]

    @staticmethod
    def purge_group_in(cur: duckdb.DuckDBPyConnection, group_id: str) -> int:
        return len(cur.execute("DELETE FROM sqs_outbox WHERE group_id = ? RETURNING 1", [group_id]).fetchall())
