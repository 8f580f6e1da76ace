"""Train/validation/test splits and the groups results are reported by.

A split never reorders a user's sequence: loaders already sorted it stably by time, so the
targets here are exactly "the last" and "the second-to-last" interaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from padrec.data.dataset import SeqDataset

Stage = Literal["valid", "test"]


@dataclass(frozen=True)
class Split:
    """Training prefixes plus one held-out target per user and stage.

    ``train_offsets``/``train_items`` are CSR training sequences (one per user, possibly empty).
    For stage ``valid`` the history is the training prefix; for ``test`` it is the training
    prefix followed by the validation item (the model sees everything before the target).
    """

    dataset: SeqDataset
    kind: str
    train_offsets: np.ndarray
    train_items: np.ndarray
    valid_users: np.ndarray
    valid_targets: np.ndarray
    test_users: np.ndarray
    test_targets: np.ndarray
    #: per-user history offsets into ``dataset.items`` for each stage: history = items[offsets[u] : end[u]]
    valid_hist_end: np.ndarray
    test_hist_end: np.ndarray

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    def train_sequences(self) -> list[np.ndarray]:
        return np.split(self.train_items, self.train_offsets[1:-1])

    def users(self, stage: Stage) -> np.ndarray:
        return self.valid_users if stage == "valid" else self.test_users

    def targets(self, stage: Stage) -> np.ndarray:
        return self.valid_targets if stage == "valid" else self.test_targets

    def histories(self, stage: Stage, users: np.ndarray | None = None) -> list[np.ndarray]:
        """Everything each user did before the stage's target, oldest first."""
        users = self.users(stage) if users is None else users
        end = self.valid_hist_end if stage == "valid" else self.test_hist_end
        off, items = self.dataset.offsets, self.dataset.items
        return [items[off[u] : end[u]] for u in users]

    @cached_property
    def train_item_counts(self) -> np.ndarray:
        """Training interactions per internal item id (index 0 unused)."""
        return np.bincount(self.train_items, minlength=self.n_items + 1)

    @cached_property
    def popularity_bins(self) -> np.ndarray:
        return popularity_bins(self.train_item_counts)


def leave_one_out(ds: SeqDataset) -> Split:
    """Last item = test, second-to-last = validation, the rest trains.

    Users with fewer than 3 interactions keep everything in training and get no targets
    (they still shape item statistics), which is what SASRec and its successors do.
    """
    lengths = ds.lengths
    has = lengths >= 3
    users = np.flatnonzero(has)
    end_train = ds.offsets[1:] - np.where(has, 2, 0)
    train_offsets, train_items = _gather(ds, ds.offsets[:-1], end_train)
    test_idx = ds.offsets[1:][users] - 1
    return Split(
        dataset=ds,
        kind="loo",
        train_offsets=train_offsets,
        train_items=train_items,
        valid_users=users,
        valid_targets=ds.items[test_idx - 1],
        test_users=users,
        test_targets=ds.items[test_idx],
        valid_hist_end=end_train,
        test_hist_end=end_train + has.astype(np.int64),
    )


def time_split(ds: SeqDataset, valid_quantile: float = 0.8, test_quantile: float = 0.9) -> Split:
    """Global temporal split: two cut times at quantiles of all timestamps.

    Interactions before the first cut train; each user's first interaction in
    ``[t_valid, t_test)`` is the validation target and the first one at or after ``t_test``
    the test target (history = everything before it). Needs timestamps.
    """
    if ds.timestamps is None:
        raise ValueError(f"dataset {ds.name!r} has no timestamps: a global time split needs them")
    if not 0 < valid_quantile < test_quantile < 1:
        raise ValueError("expected 0 < valid_quantile < test_quantile < 1")
    t_valid, t_test = np.quantile(ds.timestamps, [valid_quantile, test_quantile])
    ts, off = ds.timestamps, ds.offsets
    n = ds.n_users
    end_train = np.empty(n, dtype=np.int64)
    v_users, v_targets, t_users, t_targets = [], [], [], []
    test_end = np.empty(n, dtype=np.int64)
    for u in range(n):
        s, e = off[u], off[u + 1]
        t = ts[s:e]
        a = s + int(np.searchsorted(t, t_valid, side="left"))
        b = s + int(np.searchsorted(t, t_test, side="left"))
        end_train[u] = a
        test_end[u] = b
        if a < b and a > s:
            v_users.append(u)
            v_targets.append(ds.items[a])
        if b < e and b > s:
            t_users.append(u)
            t_targets.append(ds.items[b])
    train_offsets, train_items = _gather(ds, off[:-1], end_train)
    return Split(
        dataset=ds,
        kind="time",
        train_offsets=train_offsets,
        train_items=train_items,
        valid_users=np.asarray(v_users, dtype=np.int64),
        valid_targets=np.asarray(v_targets, dtype=np.int64),
        test_users=np.asarray(t_users, dtype=np.int64),
        test_targets=np.asarray(t_targets, dtype=np.int64),
        valid_hist_end=end_train,
        test_hist_end=test_end,
    )


def _gather(ds: SeqDataset, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.maximum(end - start, 0)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # mark [start, end) per user without a Python loop
    delta = np.zeros(len(ds.items) + 1, dtype=np.int64)
    np.add.at(delta, start, 1)
    np.add.at(delta, np.maximum(end, start), -1)
    mask = np.cumsum(delta[:-1]) > 0
    return offsets, ds.items[mask]


def popularity_bins(counts: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Bin per internal item id: 1 = most popular ... ``n_bins``, 0 = padding, ``n_bins + 1`` = unseen.

    Items are sorted by training count (descending, ties by id for determinism) and cut so each
    bin holds about ``1/n_bins`` of the training interactions; an item never splits across bins.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts) - 1
    bins = np.full(n + 1, n_bins + 1, dtype=np.int64)
    bins[0] = 0
    seen = np.flatnonzero(counts[1:] > 0) + 1
    if len(seen) == 0:
        return bins
    order = seen[np.lexsort((seen, -counts[seen]))]
    c = counts[order]
    before = np.cumsum(c) - c  # interactions in strictly more popular items
    bins[order] = np.minimum(before * n_bins // c.sum() + 1, n_bins)
    return bins


def bin_name(b: int, n_bins: int = 10) -> str:
    return "unseen" if b == n_bins + 1 else f"bin{b}"


#: Upper bounds (inclusive) of the target item's training-interaction count groups used in reports: absolute
#: counts, next to the relative popularity bins (on ml-1m the three coldest bins hold items with a median of
#: 84 training interactions; only 25 of its 6,040 test targets have 10 or fewer).
COUNT_EDGES: tuple[int, ...] = (0, 10, 50, 200)


def count_group(n: int, edges: tuple[int, ...] = COUNT_EDGES) -> str:
    """``0`` -> ``"freq0"``, ``7`` -> ``"freq1-10"``, ``500`` -> ``"freq>200"``."""
    lo = 0
    for e in edges:
        if n <= e:
            return f"freq{lo}" if lo == e else f"freq{lo}-{e}"
        lo = e + 1
    return f"freq>{edges[-1]}"


#: Every count group's name, in report order: freq0, freq1-10, ..., freq>200.
COUNT_GROUPS: tuple[str, ...] = tuple(count_group(e) for e in (*COUNT_EDGES, COUNT_EDGES[-1] + 1))


#: Upper bounds (inclusive) of the user history-length groups used in reports.
LENGTH_EDGES: tuple[int, ...] = (5, 10, 20, 50, 100)


def length_group(n: int, edges: tuple[int, ...] = LENGTH_EDGES) -> str:
    lo = 1
    for e in edges:
        if n <= e:
            return f"len{lo}-{e}"
        lo = e + 1
    return f"len>{edges[-1]}"
