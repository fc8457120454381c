"""The interaction log as numpy columns: what storage hands to training, evaluation and the baselines.

Rows are sorted by (customer, ts); a customer's events are one contiguous slice, found with `bounds()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.errors import InvalidInput
from appliance.types import EVENT_NAMES


@dataclass(frozen=True)
class Interactions:
    """Interactions sorted by (customer, ts). Build with `Interactions.from_arrays`, which sorts and validates."""

    customer: np.ndarray  # (E,) int64 customer ids
    item: np.ndarray  # (E,) int64 row index into the product-vector matrix (N, D)
    kind: np.ndarray  # (E,) int64 index into EVENT_NAMES
    ts: np.ndarray  # (E,) float64 seconds since epoch

    @classmethod
    def from_arrays(cls, customer, item, kind, ts, n_items: int | None = None) -> Interactions:
        """Sort by (customer, ts) (stable: ties keep their given order) and check shapes and ranges."""
        customer = np.asarray(customer, dtype=np.int64).reshape(-1)
        item = np.asarray(item, dtype=np.int64).reshape(-1)
        kind = np.asarray(kind, dtype=np.int64).reshape(-1)
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        if not (len(customer) == len(item) == len(kind) == len(ts)):
            raise InvalidInput("interaction columns must have the same length", field="interactions")
        if len(item) and item.min() < 0:
            raise InvalidInput("interaction item rows must be >= 0", field="interactions.item")
        if n_items is not None and len(item) and item.max() >= n_items:
            raise InvalidInput(f"interaction item rows must be < {n_items}", field="interactions.item")
        if len(kind) and (kind.min() < 0 or kind.max() >= len(EVENT_NAMES)):
            raise InvalidInput("interaction kinds must index EVENT_NAMES", field="interactions.kind")
        if not np.isfinite(ts).all():
            raise InvalidInput("interaction timestamps must be finite", field="interactions.ts")
        order = np.lexsort((ts, customer))  # last key is primary; lexsort is stable
        return cls(customer[order], item[order], kind[order], ts[order])

    @classmethod
    def empty(cls) -> Interactions:
        return cls.from_arrays([], [], [], [])

    def __len__(self) -> int:
        return len(self.customer)

    def take(self, index: np.ndarray) -> Interactions:
        """Rows by boolean mask or ascending positions (order, hence sorting, is preserved)."""
        return Interactions(self.customer[index], self.item[index], self.kind[index], self.ts[index])

    def bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(customers, starts, ends): customer c = customers[i] owns rows starts[i]:ends[i]."""
        if not len(self):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        starts = np.flatnonzero(np.r_[True, self.customer[1:] != self.customer[:-1]])
        ends = np.r_[starts[1:], len(self)]
        return self.customer[starts], starts, ends

    def row_starts(self) -> np.ndarray:
        """(E,) the first row of each row's customer."""
        _, starts, ends = self.bounds()
        return np.repeat(starts, ends - starts)

    def first_of_pair(self) -> np.ndarray:
        """(E,) True where the (customer, item) pair occurs for the first time (earliest event)."""
        first = np.zeros(len(self), dtype=bool)
        if len(self):
            pairs = np.stack([self.customer, self.item], axis=1)
            _, index = np.unique(pairs, axis=0, return_index=True)
            first[index] = True
        return first

    def window(self) -> tuple[float, float] | None:
        """(first, last) event time, or None when empty."""
        if not len(self):
            return None
        return float(self.ts.min()), float(self.ts.max())

    def rows_of(self, customers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) per asked customer; a customer without events gets an empty slice."""
        ids, starts, ends = self.bounds()
        customers = np.asarray(customers, dtype=np.int64)
        if not len(ids):
            zero = np.zeros(len(customers), dtype=np.int64)
            return zero, zero.copy()
        pos = np.clip(np.searchsorted(ids, customers), 0, len(ids) - 1)
        found = ids[pos] == customers
        return np.where(found, starts[pos], 0), np.where(found, ends[pos], 0)


def window_rows(ends: np.ndarray, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the up-to-`length` events just before each end (exclusive), oldest first, left-padded.

    Returns (rows (M, T), mask (M, T)); padded slots hold row 0 and mask False.
    """
    ends = np.asarray(ends, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    rows = ends[:, None] - length + np.arange(length)[None, :]  # (M, T)
    mask = rows >= starts[:, None]
    return np.where(mask, rows, 0), mask


def expand_ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner (S,), index (S,)): every index of the ranges starts[i]:starts[i] + counts[i]; owner is i."""
    owner = np.repeat(np.arange(len(counts)), counts)
    index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(starts, counts)
    return owner, index


def customer_rows(
    interactions: Interactions, customers: np.ndarray, before: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(owner (S,), rows (S,)): every row of the asked customers; owner indexes `customers`.

    With `before` (C,) only rows with ts < before[owner] are kept (a prefix of each slice, ts being sorted).
    """
    starts, ends = interactions.rows_of(customers)
    owner, rows = expand_ranges(starts, ends - starts)  # (S,), (S,)
    if before is not None:
        keep = interactions.ts[rows] < np.asarray(before, dtype=np.float64)[owner]
        owner, rows = owner[keep], rows[keep]
    return owner, rows


def slices_before(
    interactions: Interactions, customers: np.ndarray, before: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) per asked customer, cut to the events with ts < before[c]."""
    starts, _ = interactions.rows_of(customers)
    owner, _ = customer_rows(interactions, customers, before)
    return starts, starts + np.bincount(owner, minlength=len(customers))


def seen_matrix(
    interactions: Interactions, customers: np.ndarray, n_items: int, before: np.ndarray | None = None
) -> np.ndarray:
    """(C, N) bool: items each customer interacted with (only events with ts < before[c], when given)."""
    owner, rows = customer_rows(interactions, customers, before)
    seen = np.zeros((len(customers), n_items), dtype=bool)
    seen[owner, interactions.item[rows]] = True
    return seen


def history_inputs(
    interactions: Interactions, item_vectors: np.ndarray, customers: np.ndarray, at: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tower inputs for each customer at time at[c]: its up-to-`length` latest events with ts < at[c].

    Returns vectors (C, T, D) float32, kinds (C, T) int64, age_hours (C, T) float32, mask (C, T) bool.
    """
    at = np.asarray(at, dtype=np.float64)
    if not len(interactions):
        count = len(customers)
        return (np.zeros((count, length, item_vectors.shape[1]), np.float32), np.zeros((count, length), np.int64),
                np.zeros((count, length), np.float32), np.zeros((count, length), bool))
    starts, ends = slices_before(interactions, customers, at)
    rows, mask = window_rows(ends, starts, length)  # (C, T)
    vectors = item_vectors[interactions.item[rows]] * mask[..., None]  # (C, T, D)
    kinds = np.where(mask, interactions.kind[rows], 0)
    ages = np.where(mask, (at[:, None] - interactions.ts[rows]) / 3600.0, 0.0)
    return vectors.astype(np.float32), kinds, ages.astype(np.float32), mask
