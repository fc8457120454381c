"""Re-running a nightly export does not double the history: `appliance import events` skips the events it already
holds (same customer, product, event and timestamp) and the repeats inside one file, and says how many."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from appliance.types import Event
from storage.db import Database
from storage.events import EventStore
from web.cli import main

NIGHT_1 = """customer_id,product_id,event_name,timestamp
17850,85123A,product_viewed,2026-01-02T10:00:00Z
17850,85123A,product_viewed,2026-01-02T10:00:00Z
17850,85123A,product_purchased,2026-01-02T10:05:00Z
anon-7f3a,22423,product_viewed,
"""
# The next night's export holds the whole history again, plus what happened since.
NIGHT_2 = NIGHT_1 + """17850,22423,product_viewed,2026-01-03T09:00:00Z
anon-7f3a,22423,product_viewed,2026-01-03T09:00:00.250000Z
"""


def _events(data: Path) -> list[tuple]:
    db = Database(data / "appliance.duckdb")
    try:
        return db.read("""SELECT c.ext, p.ext, event_name, ts FROM events JOIN customer_ids c ON customer_id = c.key
                          JOIN product_ids p ON product_id = p.key ORDER BY event_id""")
    finally:
        db.close()


def test_importing_the_same_export_again_adds_only_what_is_new(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    (tmp_path / "night1.csv").write_text(NIGHT_1)
    (tmp_path / "night2.csv").write_text(NIGHT_2)
    assert main(["import", "events", str(tmp_path / "night1.csv"), "--data-dir", str(data)]) == 0
    assert "stored 3 events (1 duplicates skipped)" in capsys.readouterr().out  # the repeated view
    first = _events(data)
    assert [e[:3] for e in first] == [("17850", "85123A", "product_viewed"), ("17850", "85123A", "product_purchased"),
                                      ("anon-7f3a", "22423", "product_viewed")]

    assert main(["import", "events", str(tmp_path / "night1.csv"), "--data-dir", str(data)]) == 0
    # a row without a timestamp happened "now", at each import: it is never taken for a duplicate
    assert "stored 1 events (3 duplicates skipped)" in capsys.readouterr().out
    assert main(["import", "events", str(tmp_path / "night2.csv"), "--data-dir", str(data)]) == 0
    assert "stored 3 events (3 duplicates skipped)" in capsys.readouterr().out
    second = _events(data)
    assert second[:3] == first
    assert second[-2:] == [("17850", "22423", "product_viewed", datetime(2026, 1, 3, 9)),
                           ("anon-7f3a", "22423", "product_viewed", datetime(2026, 1, 3, 9, 0, 0, 250000))]
    dated = [e for e in second if e[3] < datetime(2026, 6, 1)]
    assert len(dated) == len(set(dated)) == 4


def test_append_new_keeps_every_field_and_the_purchases(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.duckdb")
    store = EventStore(db)
    at = datetime(2026, 3, 1, 12, 0, 0, 123456)
    now = at + timedelta(days=1)
    batch = [Event(1, 10, "product_clicked", at, "rec-1", 3), Event(1, 11, "product_purchased", at),
             Event(2, 10, "product_viewed", at, None, 7), Event(1, 10, "product_clicked", at, "rec-1", 3)]
    done = store.append_new(batch, now, [True] * 4)
    assert done.skipped == 1 and len(done.event_ids) == 3 and done.event_ids == sorted(done.event_ids)
    assert db.read("""SELECT customer_id, product_id, event_name, ts, recommendation_id, position, received_at
                      FROM events ORDER BY event_id""") == [
        (1, 10, "product_clicked", at, "rec-1", 3, now), (1, 11, "product_purchased", at, None, None, now),
        (2, 10, "product_viewed", at, None, 7, now)]
    assert store.purchased(1) == {11}
    # the same purchase again, and one a microsecond later (another event): only the latter is new
    later = Event(1, 12, "product_purchased", at + timedelta(microseconds=1))
    again = store.append_new([batch[1], later], now, [True, True])
    assert again.skipped == 1 and len(again.event_ids) == 1
    assert store.purchased(1) == {11, 12}
    assert store.append_new([], now, []).skipped == 0
    db.close()


KEYED = """customer_id,product_id,event_name,timestamp,event_id
17850,85123A,product_viewed,2026-01-02T10:00:00Z,v-1
17850,85123A,product_viewed,2026-01-02T10:00:00Z,v-2
17850,85123A,product_viewed,2026-01-02T10:00:00Z,v-2
17850,22423,product_viewed,,v-3
"""


def test_rows_with_an_event_id_are_stored_once_per_id_whatever_their_content(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    (tmp_path / "keyed.csv").write_text(KEYED)
    assert main(["import", "events", str(tmp_path / "keyed.csv"), "--data-dir", str(data)]) == 0
    # v-1 and v-2 are two views at the same moment (their ids say so); v-2's repeat is skipped
    assert "stored 3 events (1 duplicates skipped)" in capsys.readouterr().out
    assert main(["import", "events", str(tmp_path / "keyed.csv"), "--data-dir", str(data)]) == 0
    # an undated row with an id is a repeat too: the id decides, not the time of import
    assert "stored 0 events (4 duplicates skipped)" in capsys.readouterr().out
    db = Database(data / "appliance.duckdb")
    try:
        assert db.read("SELECT event_key FROM event_keys ORDER BY 1") == [("v-1",), ("v-2",), ("v-3",)]
        assert db.read("SELECT count(*) FROM events e JOIN event_keys k USING (event_id)")[0][0] == 3
    finally:
        db.close()
