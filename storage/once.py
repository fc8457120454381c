"""Rows written once per key: the rule the durable queue's deduplication ids and the events' client ids share.

A batch of rows, each with an optional key, and the keys already stored (key -> the id stored under it): every
row without a key is written, and of each key not stored yet only its first row; every other row answers with
the id its key already has (a retry gets the id of what it repeats).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb


class Once:
    def __init__(self, keys: Sequence[str | None], known: Mapping[str, int]) -> None:
        self.keys = keys
        self.known = dict(known)
        self.first: dict[str, int] = {}  # key -> the row of the batch written under it
        self.rows: list[int] = []  # the rows to write, in the batch's order
        for i, key in enumerate(keys):
            if key is not None:
                if key in self.known or key in self.first:
                    continue
                self.first[key] = i
            self.rows.append(i)

    def ids(self, written: Sequence[int]) -> list[int]:
        """One id per row of the batch, given the ids of `self.rows` as written (in their order)."""
        by_row = dict(zip(self.rows, written, strict=True))
        self.known.update({key: by_row[i] for key, i in self.first.items()})
        return [by_row[i] if i in by_row else self.known[self.keys[i]] for i in range(len(self.keys))]

    def fresh(self) -> list[bool]:
        """Whether each row of the batch is written (False: a repeat of a stored key or of an earlier row)."""
        written = set(self.rows)
        return [i in written for i in range(len(self.keys))]


def next_ids(cur: duckdb.DuckDBPyConnection, sequence: str, n: int) -> list[int]:
    """`n` new values of a sequence, ascending (ids drawn before their rows are written)."""
    if n == 0:
        return []
    return sorted(r[0] for r in cur.execute(f"SELECT nextval('{sequence}') FROM range($1)", [n]).fetchall())
