"""The shop's ids (opaque strings) and the dense int64 keys used inside, one map per kind, in DuckDB.

Outside (HTTP, import files, queue bodies, Elasticsearch documents) a product or a customer is the shop's
own id, e.g. "85123A" or "anon-7f3a". Inside (tables, hnswlib labels, arrays, the towers) it is a key:
a BIGINT handed out by a sequence, never reused. The whole map sits in memory both ways (loaded once, at
start): translating a feed page is a dict lookup per item, never a query.

    products = IdMap(db, "product")
    products.keys(["85123A", "22423"], create=True)  # -> [1, 2]; created (and committed) when new
    products.exts([2, 99])                            # -> ["22423", None]
    products.forget([1])                              # the id is gone; the same id later gets a new key
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from storage.db import Database

KINDS = ("product", "customer")


class IdMap:
    """One kind's map. Thread-safe; writes go through `db.write()` (the single writer), which is taken
    before this map's lock, never after it."""

    def __init__(self, db: Database, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.db = db
        self.table = f"{kind}_ids"
        self.sequence = f"{kind}_key_seq"
        self._lock = threading.Lock()
        rows = db.read(f"SELECT ext, key FROM {self.table}")
        self._key: dict[str, int] = dict(rows)
        self._ext: dict[int, str] = {key: ext for ext, key in rows}

    def __len__(self) -> int:
        return len(self._key)

    def key(self, ext: str) -> int | None:
        """The key of one id, None when unknown."""
        return self._key.get(ext)

    def knows(self, exts: Iterable[str]) -> bool:
        """Whether every one of these ids has a key already (`keys(create=True)` would then write nothing)."""
        key = self._key
        return all(e in key for e in exts)

    def ext(self, key: int) -> str | None:
        """The shop's id of one key, None when unknown (forgotten)."""
        return self._ext.get(key)

    def keys(self, exts: Sequence[str], create: bool = False) -> list[int | None]:
        """The key of each id, in order; unknown ones are None, or with `create` get a new key (in order of
        first appearance, committed before this returns, one transaction for the whole batch)."""
        with self._lock:
            found = [self._key.get(e) for e in exts]
        missing = list(dict.fromkeys(e for e, k in zip(exts, found, strict=True) if k is None))
        if not create or not missing:
            return found
        with self.db.write() as cur:
            fresh = sorted(r[0] for r in cur.execute(
                f"SELECT nextval('{self.sequence}') FROM range($1)", [len(missing)]
            ).fetchall())
            # ON CONFLICT: another writer may have created some since the look-up above; the table is the truth
            rows = cur.execute(
                f"""INSERT INTO {self.table} SELECT unnest($1::VARCHAR[]), unnest($2::BIGINT[])
                    ON CONFLICT (ext) DO NOTHING RETURNING ext, key""",
                [missing, fresh],
            ).fetchall()
            if len(rows) < len(missing):
                rows = cur.execute(
                    f"SELECT ext, key FROM {self.table} WHERE ext IN (SELECT unnest($1::VARCHAR[]))", [missing]
                ).fetchall()
        created = dict(rows)  # remembered once committed; a creator racing in between reads the same rows
        with self._lock:
            self._remember(rows)
        return [k if k is not None else created[e] for e, k in zip(exts, found, strict=True)]

    def exts(self, keys: Iterable[int]) -> list[str | None]:
        """The shop's id of each key, in order (None for a key that is not mapped)."""
        ext = self._ext
        return [ext.get(int(k)) for k in keys]

    def forget(self, keys: Sequence[int]) -> int:
        """Remove the mapping of these keys (an erased or merged shopper); how many were mapped."""
        keys = sorted({int(k) for k in keys})
        if not keys:
            return 0
        with self.db.write() as cur:
            rows = cur.execute(
                f"DELETE FROM {self.table} WHERE key IN (SELECT unnest($1::BIGINT[])) RETURNING ext", [keys]
            ).fetchall()
            with self._lock:  # before the commit: no new use of a forgotten key can start after this
                for key in keys:
                    ext = self._ext.pop(key, None)
                    if ext is not None:
                        self._key.pop(ext, None)
        return len(rows)

    def _remember(self, rows: Iterable[tuple[str, int]]) -> None:
        for ext, key in rows:
            self._key[ext] = key
            self._ext[key] = ext


@dataclass(frozen=True)
class ShopIds:
    """Both maps, as the app and the CLI hold them."""

    products: IdMap
    customers: IdMap

    @classmethod
    def open(cls, db: Database) -> ShopIds:
        return cls(IdMap(db, "product"), IdMap(db, "customer"))
