"""The history of scheduled job runs in DuckDB."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.db import Database


@dataclass(frozen=True, slots=True)
class JobRun:
    name: str
    started_at: datetime
    finished_at: datetime
    seconds: float
    outcome: str  # ok / failed
    detail: str | None


class JobRunStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, run: JobRun) -> None:
        with self.db.write() as cur:
            cur.execute(
                "INSERT INTO job_runs VALUES (?, ?, ?, ?, ?, ?)",
                [run.name, run.started_at, run.finished_at, run.seconds, run.outcome, run.detail],
            )

    def last(self, name: str) -> JobRun | None:
        rows = self.db.read(
            "SELECT * FROM job_runs WHERE name = ? ORDER BY started_at DESC LIMIT 1", [name]
        )
        return JobRun(*rows[0]) if rows else None

    def history(self, name: str, limit: int) -> list[JobRun]:
        rows = self.db.read("SELECT * FROM job_runs WHERE name = ? ORDER BY started_at DESC LIMIT ?", [name, limit])
        return [JobRun(*row) for row in rows]
