"""The SQL of the durable queue: messages, their visibility and the dead-letter queue, in DuckDB.

Every method is one transaction of a few set-based statements (never one statement per message).
Rows of `queue_messages` are live (`dead_at IS NULL`) or dead-lettered; a deleted message is gone.
A live message is in flight while `visible_at > now`. `seq` is the FIFO position: the message id at
send time, a fresh number when a dead letter is redriven (so it queues behind what was sent meanwhile).
`queue_dedup` remembers deduplication ids for the dedup window, even after their message is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb

from storage.db import Database
from storage.once import Once, next_ids

# Columns returned for a received message, in this order.
RECEIVED_COLUMNS = "message_id, receipt_handle, body, receive_count, sent_at, seq"

# What a receive may hand out (group = the shop's customer id; a message without one is a group of its own): every
# live message of the groups with nothing in flight, the groups oldest first and each group's messages in order,
# so a group's messages go out together as far as the limit allows (as SQS FIFO returns as many messages of one
# group as it can): a consumer refreshing a shopper once per batch then does it once for all of that shopper's
# queued events, instead of once per receive for each of them.
_DELIVERABLE = """
    SELECT message_id FROM (
        SELECT q.message_id, h.first, q.seq FROM queue_messages q JOIN (
            SELECT group_id, min(seq) AS first FROM queue_messages
            WHERE dead_at IS NULL AND group_id IS NOT NULL
            GROUP BY group_id HAVING NOT bool_or(visible_at > $now)
        ) h USING (group_id)
        WHERE q.dead_at IS NULL
        UNION ALL
        SELECT message_id, seq, seq FROM queue_messages
        WHERE dead_at IS NULL AND group_id IS NULL AND visible_at <= $now
    ) ORDER BY first, seq LIMIT $limit
"""


class QueueStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- sending ---------------------------------------------------------------------------------------

    def insert(
        self,
        cur: duckdb.DuckDBPyConnection,
        bodies: Sequence[str],
        groups: Sequence[str | None],
        dedup_ids: Sequence[str | None],
        now: datetime,
        dedup_since: datetime,
    ) -> list[int]:
        """Append messages inside the caller's transaction; returns one message id per body.

        A body whose dedup id was seen after `dedup_since` (or earlier in this batch) is not inserted:
        its id is the one the first message with that dedup id got.
        """
        if not bodies:
            return []
        known: dict[str, int] = {}
        wanted = sorted({d for d in dedup_ids if d is not None})
        if wanted:
            cur.execute("DELETE FROM queue_dedup WHERE sent_at <= $1", [dedup_since])
            known = dict(
                cur.execute(
                    "SELECT dedup_id, message_id FROM queue_dedup WHERE dedup_id IN (SELECT unnest($1::VARCHAR[]))",
                    [wanted],
                ).fetchall()
            )
        once = Once(dedup_ids, known)
        ids = next_ids(cur, "queue_seq", len(once.rows))
        if once.rows:
            cur.execute(
                """INSERT INTO queue_messages (message_id, seq, group_id, body, sent_at, visible_at, receive_count)
                   SELECT unnest($1::BIGINT[]), unnest($1::BIGINT[]), unnest($2::VARCHAR[]),
                          unnest($3::VARCHAR[]), $4::TIMESTAMP, $4::TIMESTAMP, 0""",
                [ids, [groups[i] for i in once.rows], [bodies[i] for i in once.rows], now],
            )
        answer = once.ids(ids)
        if once.first:
            cur.execute(
                """INSERT INTO queue_dedup (dedup_id, message_id, sent_at)
                   SELECT unnest($1::VARCHAR[]), unnest($2::BIGINT[]), $3::TIMESTAMP""",
                [list(once.first), [answer[i] for i in once.first.values()], now],
            )
        return answer

    # -- receiving -------------------------------------------------------------------------------------

    def receive(
        self, now: datetime, limit: int, visible_until: datetime, max_receive_count: int
    ) -> tuple[list[tuple], datetime | None, int]:
        """Hand out up to `limit` deliverable messages: the groups with nothing in flight, oldest first, each
        group's messages together and in order.

        First dead-letters every visible message already received `max_receive_count` times. Returns
        the rows (RECEIVED_COLUMNS, in FIFO order), when there are none the moment the next in-flight
        message becomes visible again (None if nothing is in flight), and how many were dead-lettered.
        """
        with self.db.write() as cur:
            rows, dead = self.receive_in(cur, now, limit, visible_until, max_receive_count)
            if rows:
                return rows, None, dead
            nxt = cur.execute(
                "SELECT min(visible_at) FROM queue_messages WHERE dead_at IS NULL AND visible_at > $1", [now]
            ).fetchone()[0]
        return [], nxt, dead

    @staticmethod
    def receive_in(
        cur: duckdb.DuckDBPyConnection, now: datetime, limit: int, visible_until: datetime, max_receive_count: int
    ) -> tuple[list[tuple], int]:
        """`receive` inside the caller's transaction: the rows handed out (in FIFO order) and how many were
        dead-lettered."""
        dead = cur.execute(
            """UPDATE queue_messages
               SET dead_at = $now, receipt_handle = NULL,
                   reason = 'not deleted after ' || receive_count || ' receives (max_receive_count)'
               WHERE dead_at IS NULL AND visible_at <= $now AND receive_count >= $max RETURNING 1""",
            {"now": now, "max": max_receive_count},
        ).fetchall()
        rows = cur.execute(
            f"""UPDATE queue_messages
                SET receive_count = receive_count + 1, visible_at = $until,
                    receipt_handle = message_id::VARCHAR || '-' || gen_random_uuid()::VARCHAR
                WHERE message_id IN ({_DELIVERABLE})
                RETURNING {RECEIVED_COLUMNS}""",
            {"now": now, "until": visible_until, "limit": limit},
        ).fetchall()
        return sorted(rows, key=lambda r: r[5]), len(dead)

    def release(self, now: datetime) -> int:
        """Make every in-flight message visible now; how many."""
        with self.db.write() as cur:
            return len(cur.execute(
                """UPDATE queue_messages SET visible_at = $1
                   WHERE dead_at IS NULL AND receipt_handle IS NOT NULL AND visible_at > $1 RETURNING 1""",
                [now],
            ).fetchall())

    def delete(self, handles: Sequence[str]) -> set[str]:
        """Delete the live messages whose latest receipt handle is one of `handles`; returns those handles."""
        if not handles:
            return set()
        with self.db.write() as cur:
            return self.delete_in(cur, handles)

    @staticmethod
    def delete_in(cur: duckdb.DuckDBPyConnection, handles: Sequence[str]) -> set[str]:
        """`delete` inside the caller's transaction."""
        if not handles:
            return set()
        rows = cur.execute(
            """DELETE FROM queue_messages
               WHERE dead_at IS NULL AND receipt_handle IN (SELECT unnest($1::VARCHAR[]))
               RETURNING receipt_handle""",
            [list(handles)],
        ).fetchall()
        return {r[0] for r in rows}

    def change_visibility(self, handle: str, visible_at: datetime) -> bool:
        with self.db.write() as cur:
            rows = cur.execute(
                """UPDATE queue_messages SET visible_at = $2
                   WHERE dead_at IS NULL AND receipt_handle = $1 RETURNING message_id""",
                [handle, visible_at],
            ).fetchall()
        return bool(rows)

    def dead_letter(self, handle: str, reason: str, now: datetime) -> bool:
        with self.db.write() as cur:
            rows = cur.execute(
                """UPDATE queue_messages SET dead_at = $3, reason = $2, receipt_handle = NULL
                   WHERE dead_at IS NULL AND receipt_handle = $1 RETURNING message_id""",
                [handle, reason, now],
            ).fetchall()
        return bool(rows)

    # -- inspecting and the dead-letter queue ----------------------------------------------------------

    @staticmethod
    def purge_group_in(cur: duckdb.DuckDBPyConnection, group_id: str) -> int:
        """Delete every message (live or dead) of one group, inside the caller's transaction; how many."""
        return len(cur.execute(
            "DELETE FROM queue_messages WHERE group_id = ? RETURNING 1", [group_id]
        ).fetchall())

    def trim_dead(self, keep: int, dead_since: datetime) -> int:
        """Drop the dead letters beyond the newest `keep` and those dead before `dead_since`, counted in
        `queue_counters`; how many were dropped."""
        with self.db.write() as cur:
            dropped = len(cur.execute(
                """DELETE FROM queue_messages WHERE message_id IN (
                       SELECT message_id FROM (
                           SELECT message_id, dead_at, row_number() OVER (ORDER BY dead_at DESC, seq DESC) AS newest
                           FROM queue_messages WHERE dead_at IS NOT NULL)
                       WHERE newest > $keep OR dead_at < $since)
                   RETURNING 1""",
                {"keep": keep, "since": dead_since},
            ).fetchall())
            if dropped:
                cur.execute(
                    """INSERT INTO queue_counters VALUES ('dead_letters_dropped', $1)
                       ON CONFLICT (name) DO UPDATE SET value = queue_counters.value + excluded.value""",
                    [dropped],
                )
        return dropped

    def stats(self, now: datetime) -> tuple[int, int, int, datetime | None, int]:
        """(visible, in flight, dead-lettered, oldest sent_at of a live message, dead letters ever dropped)."""
        return self.db.read(
            """SELECT count(*) FILTER (WHERE dead_at IS NULL AND visible_at <= $1),
                      count(*) FILTER (WHERE dead_at IS NULL AND visible_at > $1),
                      count(*) FILTER (WHERE dead_at IS NOT NULL),
                      min(sent_at) FILTER (WHERE dead_at IS NULL),
                      (SELECT coalesce(max(value), 0) FROM queue_counters WHERE name = 'dead_letters_dropped')
               FROM queue_messages""",
            [now],
        )[0]

    def dead_letters(self, limit: int) -> list[tuple]:
        """(message_id, body, reason, receive_count, sent_at, dead_at), oldest first."""
        return self.db.read(
            """SELECT message_id, body, reason, receive_count, sent_at, dead_at FROM queue_messages
               WHERE dead_at IS NOT NULL ORDER BY seq LIMIT $1""",
            [limit],
        )

    def redrive(self, limit: int | None, now: datetime) -> int:
        """Move dead letters (oldest first) back to the end of the queue, visible, receive count reset."""
        with self.db.write() as cur:
            ids = [
                r[0]
                for r in cur.execute(
                    "SELECT message_id FROM queue_messages WHERE dead_at IS NOT NULL ORDER BY seq LIMIT $1",
                    [limit],
                ).fetchall()
            ]
            if not ids:
                return 0
            cur.execute(
                """UPDATE queue_messages AS m
                   SET seq = r.seq, dead_at = NULL, reason = NULL, receipt_handle = NULL,
                       receive_count = 0, visible_at = $3
                   FROM (SELECT unnest($1::BIGINT[]) AS message_id, unnest($2::BIGINT[]) AS seq) AS r
                   WHERE m.message_id = r.message_id""",
                [ids, next_ids(cur, "queue_seq", len(ids)), now],
            )
        return len(ids)
