"""Canonical, loader-independent form of a sequential dataset.

Every loader produces a :class:`SeqDataset`; every model and evaluator consumes one.
Internal item ids are ``1..n_items`` (0 is padding), users are ``0..n_users-1``.
Sequences are stored as one flat array plus CSR offsets so that a 1M-interaction
dataset saves and loads as a handful of NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

PAD = 0
PAD_TOKEN = "[PAD]"


@dataclass(frozen=True)
class SeqDataset:
    """Per-user chronological item sequences with id maps and an item text table.

    Attributes:
        name: dataset name (registry key or a file stem).
        user_ids: external user ids, ``user_ids[u]`` for internal user ``u``.
        item_ids: external item ids, ``item_ids[i]`` for internal item ``i``; ``item_ids[0]`` is padding.
        offsets: int64 CSR offsets, ``len == n_users + 1``.
        items: int64 flat internal item ids, user ``u`` owns ``items[offsets[u]:offsets[u+1]]``.
        timestamps: optional int64 flat timestamps aligned with ``items``.
        item_table: one row per internal id ``0..n_items`` (row 0 is padding); column ``item_id``
            holds the external id and the other columns hold text fields (``title``, ``genres``...).
        meta: provenance (source files, checksums, preprocessing options).
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None
    item_table: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of real items (internal ids run 1..n_items)."""
        return len(self.item_ids) - 1

    @property
    def n_interactions(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def sequences(self) -> list[np.ndarray]:
        return np.split(self.items, self.offsets[1:-1])

    @cached_property
    def item_index(self) -> dict[str, int]:
        """External item id -> internal id."""
        return {str(e): i for i, e in enumerate(self.item_ids) if i != PAD}

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {str(e): u for u, e in enumerate(self.user_ids)}

    def to_internal(self, external: Iterable[str]) -> np.ndarray:
        """Map external item ids to internal ids; raises ``KeyError`` listing every unknown id."""
        ext = [str(e) for e in external]
        unknown = [e for e in ext if e not in self.item_index]
        if unknown:
            raise KeyError(f"unknown item ids for dataset {self.name!r}: {', '.join(unknown)}")
        return np.asarray([self.item_index[e] for e in ext], dtype=np.int64)

    def to_external(self, internal: Sequence[int] | np.ndarray) -> list[str]:
        return [str(self.item_ids[int(i)]) for i in internal]

    def titles(self) -> list[str]:
        """Title per internal id (index 0 is the pad token); empty string when unknown."""
        if self.item_table is None or "title" not in self.item_table:
            return [""] * (self.n_items + 1)
        return self.item_table["title"].fillna("").astype(str).tolist()

    def titles_of(self, internal: Sequence[int] | np.ndarray) -> list[str]:
        """Titles of the given internal ids ("" when unknown)."""
        titles = self.titles()
        return [titles[int(i)] for i in internal]

    def item_counts(self) -> np.ndarray:
        """Interactions per internal item id over the whole dataset (index 0 is 0)."""
        return np.bincount(self.items, minlength=self.n_items + 1)


def from_sequences(
    name: str,
    user_ids: Sequence[str],
    sequences: Sequence[Sequence[str]],
    timestamps: Sequence[Sequence[int]] | None = None,
    item_table: pd.DataFrame | None = None,
    meta: dict | None = None,
    keep_unseen_items: bool = False,
) -> SeqDataset:
    """Build a dataset from external ids; items are numbered by first appearance (1..n).

    ``item_table``, when given, is indexed by external item id; its rows are reordered to the
    internal numbering. Rows for items absent from the sequences are dropped, unless
    ``keep_unseen_items``: then they become items ``n+1..`` (in table order) with no interactions,
    the brand-new items a catalogue holds before anyone has used them.
    """
    flat = [str(i) for seq in sequences for i in seq]
    codes, uniques = pd.factorize(pd.Series(flat, dtype=object), sort=False)
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ts = None
    if timestamps is not None:
        ts = np.fromiter((t for seq in timestamps for t in seq), dtype=np.int64, count=len(flat))
    return from_codes(name, user_ids, offsets, codes, uniques, ts, item_table, meta, keep_unseen_items)


def from_codes(
    name: str,
    user_ids: Sequence[str] | np.ndarray,
    offsets: np.ndarray,
    codes: np.ndarray,
    item_uniques: Sequence[str] | np.ndarray,
    timestamps: np.ndarray | None = None,
    item_table: pd.DataFrame | None = None,
    meta: dict | None = None,
    keep_unseen_items: bool = False,
) -> SeqDataset:
    """:func:`from_sequences` for data already in columns: ``codes[j]`` is the position in ``item_uniques`` of
    interaction ``j`` (users' sequences back to back, cut at ``offsets``), numbered by first appearance.

    Same dataset as ``from_sequences`` would build from the same sequences, with Python objects only per
    user and per item (never per interaction), so it scales to logs of 5e7 rows.
    """
    uniques = [str(u) for u in item_uniques]
    if keep_unseen_items and item_table is not None:
        known = set(uniques)
        uniques += [str(i) for i in item_table.index if str(i) not in known]
    item_ids = np.asarray([PAD_TOKEN, *uniques], dtype=object)
    table = pd.DataFrame({"item_id": item_ids})
    if item_table is not None:
        extra = item_table.copy()
        extra.index = extra.index.astype(str)
        extra = extra.reindex(item_ids[1:])
        extra.index = range(1, len(item_ids))
        table = table.join(extra.drop(columns=["item_id"], errors="ignore"))
    return SeqDataset(
        name=name,
        user_ids=np.asarray([str(u) for u in user_ids], dtype=object),
        item_ids=item_ids,
        offsets=np.asarray(offsets, dtype=np.int64),
        items=np.asarray(codes, dtype=np.int64) + 1,
        timestamps=None if timestamps is None else np.asarray(timestamps, dtype=np.int64),
        item_table=table,
        meta=dict(meta or {}),
    )
