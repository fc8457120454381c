from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.feed_snapshot import Catalogue
from appliance.merch import NO_RULES, compile_rules
from appliance.ranking import Source, _walk, by_prior, cold_popularity, interleave, popularity_prior, rank_rows
from appliance.rules import Rule
from appliance.types import Product


def _source(name, rows, share):
    return Source(name, np.asarray(rows), np.arange(len(rows), 0, -1, dtype=float), share)


def test_shares_are_kept_and_rows_appear_once() -> None:
    personal = _source("personal", [0, 1, 2, 3, 4, 5, 6], 0.7)
    popular = _source("popular", [9, 0, 8, 7, 1, 2, 3, 4, 5, 6], 0.2)
    new = _source("new", [6, 5], 0.1)
    rows, _, names = interleave([personal, popular, new], 10)
    assert sorted(rows.tolist()) == list(range(10))
    assert names[:10].count("personal") >= 6
    assert "new" in names and "popular" in names


def test_an_exhausted_source_gives_way_and_rows_taken_by_another_are_skipped() -> None:
    sources = [_source("personal", [0], 0.9), _source("popular", [5, 0, 4, 2], 0.1)]
    rows, _, names = interleave(sources, 6)
    assert rows.tolist() == [0, 5, 4, 2]
    assert names == ["personal", "popular", "popular", "popular"]


def test_same_inputs_same_order() -> None:
    sources = [_source("a", [3, 2, 1], 0.5), _source("b", [1, 2, 3, 0], 0.5)]
    first = interleave(sources, 4)
    again = interleave(sources, 4)
    assert first[0].tolist() == again[0].tolist() and first[2] == again[2]


def test_the_gathered_interleave_equals_the_step_by_step_walk() -> None:
    """The one-index gather (turns fixed by the shares) and the walk give the same rows, scores and sources, with
    and without rows shared between sources, with sources running short, for the feed's shares and others."""
    rng = np.random.default_rng(3)
    gathered = 0
    for trial in range(400):
        shares = [(0.7, 0.1, 0.2), (0.5, 0.5), (0.25, 0.0, 0.75), (1 / 3, 1 / 3, 1 / 3)][trial % 4]
        pool = int(rng.integers(5, 400))
        sources = [Source(f"s{i}", rng.choice(pool, size=min(pool, int(rng.integers(0, 60))), replace=False),
                          rng.random(60), share) for i, share in enumerate(shares)]
        if trial % 2:  # rows no two sources share (the common case of a feed)
            sources = [Source(s.name, s.rows + i * pool, s.scores, s.share) for i, s in enumerate(sources)]
        sources = [Source(s.name, s.rows, s.scores[:len(s.rows)], s.share) for s in sources]
        limit = int(rng.integers(1, 70))
        rows, scores, names = interleave(sources, limit)
        live = [s for s in sources if s.share > 0 and len(s.rows)]
        want_rows, want_scores, want_names = _walk(live, limit) if live else (np.zeros(0), np.zeros(0), [])
        assert rows.tolist() == want_rows.tolist() and names == want_names
        assert scores.tolist() == want_scores.tolist()
        gathered += len(set(np.concatenate([s.rows for s in live]).tolist())) == sum(len(s.rows) for s in live) \
            if live else 0
    assert gathered > 150  # enough trials whose sources share no row (where the gather answers)


def test_the_popularity_prior_reorders_nearest_products_by_cosine_plus_weighted_log_popularity() -> None:
    rows = np.array([4, 7, 9])  # nearest first
    cosines = np.array([0.80, 0.78, 0.50])
    popularity = np.zeros(10)
    popularity[[4, 7, 9]] = [0.0, 20.0, 1000.0]
    prior = popularity_prior(popularity)
    assert by_prior(rows, cosines, prior, 0.0).tolist() == [0, 1, 2]  # no prior: cosine order
    # 0.78 + 0.01 * log(21) = 0.81 passes 0.80; 0.50 + 0.01 * log(1001) = 0.57 stays last
    assert by_prior(rows, cosines, prior, 0.01).tolist() == [1, 0, 2]
    assert popularity_prior(np.array([-1.0, 0.0, np.e - 1])).tolist() == [0.0, 0.0, 1.0]


def test_a_product_without_events_ranks_at_a_quantile_of_the_known_ones_whatever_the_traffic() -> None:
    popularity = np.array([[0.0, 1.0, 3.0, 7.0, 15.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    known = popularity > 0
    assert cold_popularity(popularity, known, 0.0).tolist() == [[0.0], [0.0]]  # off: the cold stay at 0
    assert cold_popularity(popularity, known, 0.5).tolist() == [[3.0], [0.0]]  # the median known; none known: 0
    assert cold_popularity(popularity, known, 1.0).tolist() == [[15.0], [0.0]]
    prior = popularity_prior(popularity, known, cold_popularity(popularity, known, 0.5))
    assert prior[0].tolist() == np.log1p([3.0, 1.0, 3.0, 7.0, 15.0]).tolist() and not prior[1].any()
    # ten times the traffic: the cold product keeps its place among the known ones
    busy = popularity * 10
    rank = np.argsort(-popularity_prior(busy, known, cold_popularity(busy, known, 0.5))[0], kind="stable")
    assert rank.tolist() == np.argsort(-prior[0], kind="stable").tolist()
    # a product with an event long ago (popularity underflowed to 0) is known: it stays below the cold one
    faded, known = np.array([0.0, 0.0, 3.0]), np.array([True, False, True])
    old = popularity_prior(faded, known, cold_popularity(faded, known, 1.0))
    assert old[0] == 0.0 < old[1] == old[2]


def _catalog(n: int, rng: np.random.Generator, first: int = 1000, unknown: float = 0.1) -> list[Product]:
    base = datetime(2026, 3, 1)
    return [Product(int(pid), f"Thing {pid}", None, ("Home",), None, 1.0, True,
                    base + timedelta(hours=int(rng.integers(0, 40))) if rng.random() >= unknown else None)
            for pid in rng.permutation(np.arange(n)) + first]


def test_the_default_order_is_popularity_then_newest_then_id_after_arrivals_edits_and_removals() -> None:
    """Ties everywhere (40 distinct times, popularity from 4 values, arrivals unknown); the newest-first order
    the ranking starts from is kept between rankings and must follow every change of the rows."""
    rng = np.random.default_rng(4)
    view = CatalogView(_catalog(300, rng))
    now = datetime(2026, 3, 2, 6).timestamp()
    for step in range(5):
        n = len(view)
        popularity = rng.choice([0.0, 0.0, 1.0, 2.5], n)
        ranking = rank_rows(view, popularity, now, 1.0, 0.0)
        order = np.lexsort((view.ids, -view.created, -popularity))  # the definition
        assert ranking.order.tolist() == order.tolist()
        assert ranking.rank[ranking.order].tolist() == list(range(n))
        new = np.flatnonzero(view.created >= now - 86400.0)
        assert ranking.new_rows.tolist() == new[np.lexsort((view.ids[new], -view.created[new]))].tolist()
        assert 0 < len(ranking.new_rows) < n
        edited = [replace(view.products[int(pid)], created_at=datetime(2026, 3, 2, step))
                  for pid in rng.choice(sorted(view.products), 5, replace=False)]
        arrivals = _catalog(1 + step, rng, first=2000 + 10 * step, unknown=1.0 if step == 3 else 0.1)
        view.upsert(arrivals if step % 2 else edited)
        view.remove(rng.choice(sorted(view.products), 2, replace=False).tolist())


def test_the_walk_keeps_the_round_robin_when_a_source_runs_out_midway() -> None:
    """Worked by hand: turns personal, popular, new, personal, ... (shares 0.5 / 0.3 / 0.2); at the fourth place
    personal's next row (1) is popular's already and it has no other, so it leaves, and popular and new go on
    from the credits those four turns left them (popular 0.2, new -0.2): popular, popular, new (2 is taken: 8)."""
    none = np.zeros
    sources = [Source("personal", np.array([0, 1]), none(2), 0.5),
               Source("popular", np.array([1, 2, 3, 4]), none(4), 0.3),
               Source("new", np.array([9, 2, 8]), none(3), 0.2)]
    rows, _, names = _walk(sources, 8)
    assert rows.tolist() == [0, 1, 9, 2, 3, 8, 4]
    assert names == ["personal", "popular", "new", "popular", "popular", "new", "popular"]


def test_the_catalogue_scores_rows_as_defined_and_the_new_arrivals_take_only_their_own_room() -> None:
    """Popular items score popularity / the most popular's, new arrivals 1 - age / new days, boosts and buries
    move both orders; the ranking's new-arrival arrays are as long as the new arrivals (main: freshness over
    every row), its ranks int32."""
    rng = np.random.default_rng(7)
    view = CatalogView(_catalog(400, rng))
    now = datetime(2026, 3, 2, 12).timestamp()
    popularity = rng.choice([0.0, 1.0, 2.5, 4.0], len(view))
    ranking = rank_rows(view, popularity, now, 1.0, 0.0)
    new = np.flatnonzero(view.created >= now - 86400.0)
    assert 0 < len(ranking.new_rows) == len(ranking.freshness) == len(new) < len(view)
    assert ranking.rank.dtype == np.int32
    rows, fresh = np.arange(len(view)), np.zeros(len(view))
    fresh[new] = np.clip(1.0 - (now - view.created[new]) / 86400.0, 0.0, 1.0)
    last_new, first_popular = int(ranking.new_rows[-1]), int(ranking.order[0])
    rules = [Rule("boost", product_id=int(view.ids[last_new]), strength=0.9, rule_id=1),
             Rule("bury", product_id=int(view.ids[first_popular]), strength=0.5, rule_id=2)]
    places = []
    for merch in (NO_RULES, compile_rules(view, rules)):
        sources = Catalogue.of(ranking, merch, view, (0.6, 0.1, 0.3)).sources
        popular, arrivals = sources.popular, sources.new
        score = merch.rescore(rows, popularity / popularity.max())
        assert popular.score_of(rows).tolist() == popular.row_scores().tolist() == score.tolist()
        assert popular.order.tolist() == np.lexsort((view.ids, -view.created, -score)).tolist()
        moved = merch.rescore(new, fresh[new])
        assert arrivals.order.tolist() == new[np.lexsort((view.ids[new], -view.created[new], -moved))].tolist()
        assert arrivals.score_of(new).tolist() == moved.tolist()
        assert arrivals.base_of(new).tolist() == fresh[new].tolist()
        places.append((arrivals.order.tolist().index(last_new), popular.order.tolist().index(first_popular)))
    assert places[1][0] < places[0][0] and places[1][1] > places[0][1] == 0  # the rules moved both
