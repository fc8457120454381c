"""A feed_id keeps its order after popularity moves on, while what its snapshot holds stops growing with the
catalog: a catalogue new feeds no longer use keeps only the heads of its sources (appliance/feed_snapshot.py),
and a page deeper than them starts a new feed_id, as an expired one does. Over the real DuckDB shop of
tests/test_feed_pipeline.py."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest
from msgspec import structs

from appliance.pipeline import FeedQuery
from appliance.ranking import Ranking
from appliance.types import Event, now_utc
from storage.db import Database
from storage.events import EventStore
from tests.test_feed_pipeline import SETTINGS, N, _ids, shop  # noqa: F401 (the fixture)

DEPTH = 10  # `feed.snapshot_depth`: each superseded source keeps 3 x 10 rows (no diversity in SETTINGS)


def _move_popularity(rec, db: Database, round_: int) -> None:
    """Purchases of ten products far down today's order make them the most popular; then the popularity job."""
    stamp = now_utc()
    EventStore(db).append([Event(1000 + k, pid, "product_purchased", stamp)
                           for pid in range(200 + 10 * round_, 210 + 10 * round_) for k in range(3)], stamp)
    rec.refresh_popularity()
    assert all(pid >= 200 for pid in _ids(rec.feed(FeedQuery(per_page=5)))), "new feeds follow the new popularity"


def _rankings() -> int:
    gc.collect()
    return sum(type(o) is Ranking for o in gc.get_objects())


def test_pages_keep_page_ones_order_after_refreshes_and_old_rankings_are_not_kept(shop, db) -> None:  # noqa: F811
    rec = shop[0]
    rec.settings = replace(SETTINGS, snapshot_depth=DEPTH)
    reference = rec.feed(FeedQuery(per_page=5))
    expected = [_ids(rec.feed(FeedQuery(page=p, per_page=5, feed_id=reference.feed_id))) for p in (2, 3)]
    first = rec.feed(FeedQuery(per_page=5))
    for round_ in range(5):
        _move_popularity(rec, db, round_)
    later = [rec.feed(FeedQuery(page=p, per_page=5, feed_id=first.feed_id)) for p in (2, 3)]
    assert [_ids(page) for page in later] == expected
    assert {page.feed_id for page in later} == {first.feed_id}
    # six rankings came and went: only the current one is kept whole (main kept one per snapshot: 7)
    assert _rankings() == 1
    catalogues = {id(s.catalogue): s.catalogue for s in rec._snapshots.values()}.values()
    old = [c for c in catalogues if c.superseded]
    assert len(old) == 5 and all(c.prior is None for c in old)
    for catalogue in old:
        for source in (catalogue.sources.popular, catalogue.sources.new):
            arrays = (source.order, source.score, source.base, source.kept, source.where)
            assert all(len(a) <= 3 * DEPTH for a in arrays) and source.rank is None


def test_a_page_deeper_than_a_superseded_snapshot_keeps_starts_a_new_feed_id(shop, db) -> None:  # noqa: F811
    rec = shop[0]
    rec.settings = replace(SETTINGS, snapshot_depth=DEPTH)
    first = rec.feed(FeedQuery(per_page=5))
    _move_popularity(rec, db, 0)
    deep = rec.feed(FeedQuery(page=4, per_page=5, feed_id=first.feed_id))  # merges 40 rows of a 30-row head
    assert deep.feed_id != first.feed_id and deep.total == N
    fresh = rec.feed(FeedQuery(per_page=5))
    assert _ids(deep) == _ids(rec.feed(FeedQuery(page=4, per_page=5, feed_id=fresh.feed_id)))
    assert _ids(rec.feed(FeedQuery(page=2, per_page=5, feed_id=deep.feed_id))) == \
        _ids(rec.feed(FeedQuery(page=2, per_page=5, feed_id=fresh.feed_id)))  # it pages on from today's order


def test_only_the_newest_superseded_orders_are_kept_and_an_older_feed_id_answers_as_expired(shop, db) -> None:  # noqa: F811
    rec = shop[0]
    rec.settings = replace(SETTINGS, snapshot_depth=DEPTH, snapshot_orders=2)
    oldest = rec.feed(FeedQuery(per_page=5))
    kept = []
    for round_ in range(4):  # four newer rankings, each with a feed: the two newest superseded stay
        _move_popularity(rec, db, round_)
        kept.append(rec.feed(FeedQuery(per_page=5)))
    catalogues = {id(s.catalogue): s.catalogue for s in rec._snapshots.values()}.values()
    holding = [c for c in catalogues if len(c.sources.popular.order)]
    assert len(holding) == 3  # the current whole and two heads
    assert rec.feed(FeedQuery(page=2, per_page=5, feed_id=oldest.feed_id)).feed_id != oldest.feed_id
    assert rec.feed(FeedQuery(page=2, per_page=5, feed_id=kept[-2].feed_id)).feed_id == kept[-2].feed_id


@pytest.mark.parametrize("query", [
    FeedQuery(per_page=5, categories=("sneakers",)), FeedQuery(per_page=5, min_score=0.2),
    FeedQuery(per_page=5, in_stock=True, exclude=frozenset({1, 2, 3})),
    FeedQuery(per_page=5, sort="price_asc", max_price=30), FeedQuery(per_page=3),
])
def test_a_filtered_page_of_a_superseded_snapshot_is_its_own_order_or_a_new_feed_id(shop, db, query) -> None:  # noqa: F811
    rec = shop[0]
    rec.settings = replace(SETTINGS, snapshot_depth=DEPTH)
    reference = rec.feed(query)
    expected = [_ids(rec.feed(replace_query(query, p, reference.feed_id))) for p in (2, 3)]
    first = rec.feed(query)
    _move_popularity(rec, db, 0)
    got = [rec.feed(replace_query(query, page, first.feed_id)) for page in (2, 3)]
    for page, wanted in zip(got, expected, strict=True):
        assert _ids(page) == wanted or page.feed_id != first.feed_id  # never another order under the same id
    if query.sort is None and not query.categories and query.min_score is None:  # 20 of 30 rows: a filter
        assert got[0].feed_id == first.feed_id, "within the head, the same feed_id answers"  # leaving 4 in 5


def replace_query(query: FeedQuery, page: int, feed_id: str) -> FeedQuery:
    return structs.replace(query, page=page, feed_id=feed_id)
