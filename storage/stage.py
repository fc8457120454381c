"""A batch written to several tables in two DuckDB calls (BENCHMARKS.md "Feed under load", thirteenth round).

Every DuckDB call gives up the GIL (DuckDB's Python binding releases it for the statements before a call's last one,
again for the last one, and once more for each unfinished task of a query), and while other threads run Python each
time the writer takes it back it waits up to a switch interval (5 ms), holding the writer lock. A transaction of
a begin, three statements, two fetches and a commit waited that many times. Staged, the call that begins the
transaction puts the batch's rows in a temporary table of the writer's connection (its one statement with
parameters: DuckDB binds them to a call's last statement only), and a second call runs every table's INSERT from
it, the COMMIT, and a SELECT of what the caller needs back.

    stage = Stage("event_batch", n, [events_part, queue_part])
    with db.write() as tx:
        rows = stage.write(tx, "SELECT event_id FROM {stage} ORDER BY i")  # committed when this returns
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.db import Transaction


@dataclass(frozen=True)
class Part:
    """What one table takes from a stage: its columns (name -> (DuckDB type, one value per row)), values the same
    for every row (name -> (type, value)), columns computed per row as the rows are staged, in the batch's order
    (name -> SQL expression, e.g. the next value of a sequence), and the INSERT that reads them (`{stage}` names the
    staged table, `i` is the row's place in the batch; empty: the columns are for another part's INSERT)."""

    columns: dict[str, tuple[str, Sequence[Any]]]
    insert: str = ""
    scalars: dict[str, tuple[str, Any]] = field(default_factory=dict)
    drawn: dict[str, str] = field(default_factory=dict)


class Stage:
    def __init__(self, table: str, rows: int, parts: Sequence[Part]) -> None:
        self.table = table
        self.rows = rows
        self.parts = list(parts)

    def create(self) -> tuple[str, dict[str, Any]]:
        """The statement that stages the rows, and its (named) parameters."""
        picked: list[str] = ["unnest(range($rows)) AS i"]
        params: dict[str, Any] = {"rows": self.rows}
        for part in self.parts:
            for name, (kind, values) in part.columns.items():
                if name in params or len(values) != self.rows:
                    raise ValueError(f"staged column {name}: twice, or not one value per row")
                picked.append(f"unnest(${name}::{kind}[]) AS {name}")
                params[name] = list(values)
            for name, (kind, value) in part.scalars.items():
                if name in params:
                    raise ValueError(f"staged column {name} twice")
                picked.append(f"${name}::{kind} AS {name}")
                params[name] = value
        drawn = "".join(f"{expr} AS {name}, " for part in self.parts for name, expr in part.drawn.items())
        return (f"CREATE OR REPLACE TEMP TABLE {self.table} AS SELECT {drawn}* FROM "
                f"(SELECT {', '.join(picked)}) ORDER BY i"), params

    def write(self, tx: Transaction, answer: str) -> list[tuple]:
        """Stage the rows (beginning the transaction, unless an earlier statement of `tx` has), insert every part and
        commit; the rows of `answer` (a SELECT; `{stage}` names the staged table), read once committed."""
        sql, params = self.create()
        tx.execute(sql, params)
        statements = [p.insert.replace("{stage}", self.table) for p in self.parts if p.insert]
        return tx.commit_after(statements, answer.replace("{stage}", self.table))
