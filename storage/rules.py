"""Merchandising rules in DuckDB, with the whole list kept in memory for the hot path (this process is the
only writer, so every write refreshes it)."""

from __future__ import annotations

import threading
from dataclasses import astuple, fields, replace
from datetime import datetime

from appliance.errors import NotFound
from appliance.rules import Rule
from storage.db import Database

_FIELDS = [f.name for f in fields(Rule) if f.name != "rule_id"]
_COLUMNS = ", ".join(_FIELDS)


class RuleStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._rules: tuple[Rule, ...] | None = None

    def all(self) -> tuple[Rule, ...]:
        """Every rule (active or not), oldest first."""
        with self._lock:
            if self._rules is None:
                rows = self.db.read(f"SELECT rule_id, {_COLUMNS} FROM rules ORDER BY rule_id")
                self._rules = tuple(Rule(**dict(zip(_FIELDS, row[1:], strict=True)), rule_id=row[0]) for row in rows)
            return self._rules

    def loaded(self) -> bool:
        """Whether `all` answers from memory (False right after a write: the next `all` reads DuckDB)."""
        return self._rules is not None

    def get(self, rule_id: int) -> Rule:
        rule = next((r for r in self.all() if r.rule_id == rule_id), None)
        if rule is None:
            raise NotFound(f"rule {rule_id} does not exist")
        return rule

    def add(self, rule: Rule, now: datetime) -> Rule:
        values = list(astuple(rule))[:len(_FIELDS)]
        with self.db.write() as cur:
            rule_id = cur.execute(
                f"INSERT INTO rules ({_COLUMNS}, created_at) VALUES ({', '.join('?' * (len(_FIELDS) + 1))}) "
                "RETURNING rule_id", [*values, now],
            ).fetchone()[0]
        self._forget()
        return replace(rule, rule_id=rule_id)

    def replace(self, rule_id: int, rule: Rule) -> Rule:
        self.get(rule_id)
        values = list(astuple(rule))[:len(_FIELDS)]
        with self.db.write() as cur:
            cur.execute(f"UPDATE rules SET {', '.join(f'{c} = ?' for c in _FIELDS)} WHERE rule_id = ?",
                        [*values, rule_id])
        self._forget()
        return replace(rule, rule_id=rule_id)

    def delete(self, rule_id: int) -> None:
        self.get(rule_id)
        with self.db.write() as cur:
            cur.execute("DELETE FROM rules WHERE rule_id = ?", [rule_id])
        self._forget()

    def _forget(self) -> None:
        with self._lock:
            self._rules = None
