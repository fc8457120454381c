"""What "because you viewed X" names for each of a batch of shoppers' nearest products, found for the whole batch
at once: the newest product of the shopper's history in the same subcategory, else in the same top category,
never the product itself, nothing for a product without a category path or a history without a match."""

from __future__ import annotations

import numpy as np

from appliance.catalog_view import CatalogView
from appliance.nearest_cache import NearestCache
from tests.helpers import product

PATHS = {1: ("Shoes", "Sneakers"), 2: ("Shoes", "Sneakers"), 3: ("Shoes", "Boots"), 4: ("Home", "Pots"),
         5: ("Home", "Pans"), 6: ("Toys",), 7: (), 8: ("Shoes", "Boots"), 9: ("Pots",), 10: ("Home", "Pots")}


def _view() -> CatalogView:
    view = CatalogView([product(pid, category_path=path) for pid, path in PATHS.items()])
    view.remove([10])  # a removed product explains nothing and is never found
    return view


def _found(view: CatalogView, ids: list[list[int]], histories: list[tuple[int, ...]], depth: int = 50) -> list:
    sims = np.linspace(0.9, 0.1, len(ids[0]))
    cache = NearestCache(lambda vectors, k: (np.array(ids), np.tile(sims, (len(vectors), 1))), depth, 10)
    vectors = np.zeros((len(ids), 2), np.float32)
    cache.prepare([((i,), v, lambda h=h: h) for i, (v, h) in enumerate(zip(vectors, histories, strict=True))],
                  view, depth)
    return [cache.rows((i,), vectors[i], lambda: (), view, depth) for i in range(len(ids))]


def _named(view: CatalogView, found) -> dict[int, int]:
    """product -> the product that explains it"""
    return {int(view.ids_all[row]): pid for row, pid in found.anchors.items()}


def test_the_newest_of_the_same_subcategory_then_of_the_same_top_category_and_never_the_item_itself() -> None:
    view = _view()
    searched = [[1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 4, 5, 6, 7, 8, 1], [1, 3, 5, 6, 7, 8, 2, 4]]
    histories = [
        (5, 2, 1, 3),  # newest first
        (10, 7, 9, 4, 4),  # a removed product, one without a path, a one-level path, a duplicate
        (),  # no history: nothing explained
    ]
    first, second, third = _found(view, searched, histories)
    # 2 and 1 explain each other (Sneakers); Boots: 8 by 3, 3 (itself the only Boots) by the newest Shoes, 2;
    # 4 (Pots) by the newest Home, 5; 5 (Pans) only by itself: nothing; no match for Toys or no path
    assert _named(view, first) == {1: 2, 2: 1, 3: 2, 8: 3, 4: 5}
    # the subcategory is matched by name whatever its level: 9 ("Pots") explains 4 (Home/Pots); 5 by 4 (Home)
    assert _named(view, second) == {4: 9, 5: 4}
    assert _named(view, third) == {}
    assert [int(view.ids_all[r]) for r in first.rows] == searched[0]  # every live product kept, in order
    assert np.allclose(first.cosines, np.linspace(0.9, 0.1, 8))


def test_unknown_and_removed_products_are_left_out_of_the_rows_and_a_short_search_is_complete() -> None:
    view = _view()
    found, = _found(view, [[3, 99, 10, 8]], [(8, 3)], depth=5)
    assert [int(view.ids_all[r]) for r in found.rows] == [3, 8]
    assert np.allclose(found.cosines, np.linspace(0.9, 0.1, 4)[[0, 3]])
    assert _named(view, found) == {3: 8, 8: 3}
    assert found.complete  # the index gave fewer than asked for


def test_rows_found_by_id_follow_products_added_after_the_first_look_up() -> None:
    view = _view()
    assert view.rows_where(np.array([4, 99]))[1].tolist() == [True, False]
    view.upsert([product(99, category_path=("Shoes", "Boots")), product(0, category_path=("Toys",))])
    rows, found = view.rows_where(np.array([[99, 0], [4, 10]]))
    assert found.tolist() == [[True, True], [True, False]]
    assert view.ids_all[rows[found]].tolist() == [99, 0, 4]
    view.upsert([product(99, category_path=("Home", "Pans"))])  # an edit moves it to another subcategory
    found, = _found(view, [[5, 99]], [(99, 5)])
    assert _named(view, found) == {5: 99, 99: 5}
