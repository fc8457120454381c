"""The aggregates the widgets are built from: baskets (co-occurrence by shopper session), distinct shoppers per
product in a time range, and a shopper's recently viewed products."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from storage.db import Database

# Events of one shopper at most `gap` seconds apart are one session; a session's products are one basket.
_SESSIONS = """
    e AS (SELECT customer_id, product_id, ts FROM events
          WHERE event_name IN (SELECT unnest($names::VARCHAR[])) AND ts >= $since::TIMESTAMP),
    g AS (SELECT *, CASE WHEN epoch(ts) - epoch(lag(ts) OVER (PARTITION BY customer_id ORDER BY ts)) <= $gap
                         THEN 0 ELSE 1 END AS starts FROM e),
    s AS (SELECT customer_id, product_id,
                 sum(starts) OVER (PARTITION BY customer_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS session FROM g),
    b AS (SELECT DISTINCT customer_id, session, product_id FROM s),
    sized AS (SELECT *, count(*) OVER (PARTITION BY customer_id, session) AS size FROM b)
"""


class BasketStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def co_occurrence(
        self, names: Sequence[str], since: datetime, gap_seconds: float, max_basket: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
        """Pairs of products in one basket counted once per shopper (one shopper cannot make a pair):
        ({a, b, together}, {product_id, shoppers}, shoppers with any basket). Both directions of a pair are
        listed; baskets larger than `max_basket` (a crawler, a bulk order) are left out."""
        params = {"names": list(names), "since": since, "gap": gap_seconds, "cap": max_basket}
        with self.db.snapshot() as cur:
            pairs = cur.execute(
                f"""WITH {_SESSIONS}, kept AS (SELECT * FROM sized WHERE size BETWEEN 2 AND $cap)
                    SELECT x.product_id AS a, y.product_id AS b, count(DISTINCT x.customer_id) AS together
                    FROM kept x JOIN kept y USING (customer_id, session)
                    WHERE x.product_id <> y.product_id GROUP BY ALL""",
                params,
            ).fetchnumpy()
            support = cur.execute(
                f"""WITH {_SESSIONS} SELECT product_id, count(DISTINCT customer_id) AS shoppers
                    FROM sized WHERE size <= $cap GROUP BY product_id""",
                params,
            ).fetchnumpy()
            shoppers = cur.execute(
                "SELECT count(DISTINCT customer_id) FROM events WHERE event_name IN (SELECT unnest($1::VARCHAR[])) "
                "AND ts >= $2::TIMESTAMP", [list(names), since],
            ).fetchone()[0]
        return pairs, support, int(shoppers)

    def shoppers_per_product(self, since: datetime, until: datetime) -> tuple[np.ndarray, np.ndarray]:
        """(product_ids, distinct shoppers with any event on it in [since, until))."""
        data = self.db.read_numpy(
            """SELECT product_id, count(DISTINCT customer_id) AS shoppers FROM events
               WHERE ts >= $1::TIMESTAMP AND ts < $2::TIMESTAMP GROUP BY product_id""",
            [since, until],
        )
        return np.asarray(data["product_id"], np.int64), np.asarray(data["shoppers"], np.float64)

    def recently_viewed(self, customer_id: int, names: Sequence[str], since: datetime, limit: int
                        ) -> list[tuple[int, float]]:
        """The shopper's last `limit` distinct products with one of these events since `since`, newest first,
        with when (epoch seconds)."""
        return [
            (int(pid), float(at)) for pid, at in self.db.read(
                """SELECT product_id, epoch(max(ts)) AS last_ts FROM events
                   WHERE customer_id = $1 AND event_name IN (SELECT unnest($2::VARCHAR[])) AND ts >= $3::TIMESTAMP
                   GROUP BY product_id ORDER BY last_ts DESC, product_id LIMIT $4""",
                [customer_id, list(names), since, limit],
            )
        ]

    def recent_views(self, names: Sequence[str], since: datetime, per_shopper: int, shoppers: int
                     ) -> list[tuple[int, int, float]]:
        """For the `shoppers` most recently active shoppers (by these events since `since`), their last
        `per_shopper` distinct products: (customer, product, epoch seconds of the newest such event)."""
        return [(int(c), int(p), float(at)) for c, p, at in self.db.read(
            """WITH seen AS (SELECT customer_id, product_id, max(ts) AS last_at FROM events
                             WHERE event_name IN (SELECT unnest($1::VARCHAR[])) AND ts >= $2::TIMESTAMP
                             GROUP BY ALL),
                    active AS (SELECT customer_id FROM seen GROUP BY customer_id ORDER BY max(last_at) DESC LIMIT $4),
                    ranked AS (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY last_at DESC, product_id)
                               AS n FROM seen WHERE customer_id IN (SELECT customer_id FROM active))
               SELECT customer_id, product_id, epoch(last_at) FROM ranked WHERE n <= $3""",
            [list(names), since, per_shopper, shoppers],
        )]

    def category_shoppers(self, since: datetime, until: datetime) -> tuple[list[tuple[str, ...]], np.ndarray]:
        """(category paths, distinct shoppers with any event on a product under each in [since, until)): every
        prefix of a product's path counts as a category ("Shoes", "Shoes > Running")."""
        rows = self.db.read(
            """WITH e AS (SELECT DISTINCT e.customer_id, p.category_path AS path FROM events e
                          JOIN products p USING (product_id)
                          WHERE e.ts >= $1::TIMESTAMP AND e.ts < $2::TIMESTAMP AND len(p.category_path) > 0)
               SELECT list_slice(path, 1, depth) AS prefix, count(DISTINCT customer_id)
               FROM e, range(1, len(path) + 1) AS r(depth) GROUP BY prefix""",
            [since, until],
        )
        return [tuple(path) for path, _ in rows], np.array([n for _, n in rows], np.float64)
