"""Benchmark preprocessing: rating threshold, k-core, length limits, then a fresh 1..n item numbering.

Steps, in this order (each one only removes interactions, never reorders them):
1. ``min_rating``: keep interactions rated at least this. Ratings are not part of ``SeqDataset``; raw
   datasets from the loaders carry them privately (:func:`~padrec.data.loaders.ratings_of`), and a
   prepared dataset does not (the threshold is recorded in ``meta['options']``).
2. ``user_core``/``item_core``: drop users/items with fewer interactions, repeated until neither
   changes (a fixed point), as the k-core benchmarks do.
3. ``max_len``: keep each user's most recent ``max_len`` interactions.
4. ``min_user_len``: drop users left with fewer interactions (applied once, after truncation).
Users left with no interactions are always removed. Counts of what was dropped go to ``meta['dropped']``.
Items that have no interaction in the raw data at all (an item table's brand-new items) are never
filtered: they are kept after the interacted items, for models that score items from text.
Users with 1-2 interactions are kept: :func:`~padrec.data.split.leave_one_out` trains on them without
evaluating them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from padrec.data.dataset import PAD_TOKEN, SeqDataset
from padrec.data.errors import DataError
from padrec.data.loaders._common import ratings_of


class PrepOptions(BaseModel):
    """How a raw dataset becomes the one models train on; part of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_rating: float | None = None
    user_core: int = Field(0, ge=0)
    item_core: int = Field(0, ge=0)
    max_len: int | None = Field(None, ge=1)
    min_user_len: int = Field(0, ge=0)

    def describe(self) -> str:
        changed = self.model_dump(exclude_defaults=True)
        return ", ".join(f"{k}={v}" for k, v in changed.items()) or "as given"


#: The preprocessing every published number in MISSION.md §3 assumes, per registry name.
BENCHMARK_OPTIONS: dict[str, PrepOptions] = {
    "ml-1m": PrepOptions(item_core=5),  # -> 6,040 users / 3,416 items / 999,611 interactions
    "ml-100k": PrepOptions(),
    "amazon-beauty": PrepOptions(),  # the S3Rec files are already 5-core
    "amazon-sports": PrepOptions(),
    "amazon-toys": PrepOptions(),
    "mind": PrepOptions(),
}


def benchmark_options(name: str) -> PrepOptions:
    return BENCHMARK_OPTIONS.get(name, PrepOptions())


def _source(ds: SeqDataset) -> str:
    files = ds.meta.get("source_files") or {}
    return next(iter(files.values()), ds.name) if files else ds.name


def prepare(ds: SeqDataset, opts: PrepOptions | None = None) -> SeqDataset:
    """Filter ``ds`` by ``opts`` and renumber items 1..n by first appearance (item table kept aligned).

    Raises :class:`DataError` when nothing is left, naming the source and the options.
    """
    opts = opts or PrepOptions()
    n_users, n_items = ds.n_users, ds.n_items
    uid = np.repeat(np.arange(n_users), ds.lengths)
    items = ds.items
    keep = np.ones(len(items), dtype=bool)

    if opts.min_rating is not None:
        ratings = ratings_of(ds)
        if ratings is None:
            raise DataError(
                _source(ds),
                f"min_rating={opts.min_rating} needs star ratings, but dataset {ds.name!r} has none "
                "(e.g. ml-1m from sequences.txt; use ratings.dat, or drop min_rating)",
                field="min_rating",
            )
        keep &= ratings >= opts.min_rating

    if opts.user_core or opts.item_core:
        while True:
            bad = np.zeros_like(keep)
            if opts.item_core:
                bad |= np.bincount(items[keep], minlength=n_items + 1)[items] < opts.item_core
            if opts.user_core:
                bad |= np.bincount(uid[keep], minlength=n_users)[uid] < opts.user_core
            bad &= keep
            if not bad.any():
                break
            keep &= ~bad

    if opts.max_len is not None:
        kept_per_user = np.bincount(uid[keep], minlength=n_users)
        # rank of each kept interaction counted from the user's most recent one (0 = newest)
        idx = np.flatnonzero(keep)
        starts = np.concatenate([[0], np.cumsum(kept_per_user)[:-1]])
        pos = np.arange(len(idx)) - starts[uid[idx]]
        from_end = kept_per_user[uid[idx]] - 1 - pos
        keep[idx[from_end >= opts.max_len]] = False

    min_len = max(1, opts.min_user_len)
    per_user = np.bincount(uid[keep], minlength=n_users)
    keep &= (per_user >= min_len)[uid]

    users_kept = np.flatnonzero(np.bincount(uid[keep], minlength=n_users) > 0)
    if len(users_kept) == 0:
        raise DataError(
            _source(ds),
            f"no interactions left after preprocessing with {opts.describe()} "
            f"(raw: {n_users:,} users, {n_items:,} items, {ds.n_interactions:,} interactions); "
            "loosen the filters",
        )

    never_used = np.flatnonzero(np.bincount(items, minlength=n_items + 1)[1:] == 0) + 1
    out = keep_interactions(ds, keep, extra_items=never_used)
    out.meta.update(
        options=opts.model_dump(),
        new_items=len(never_used),
        raw={"users": n_users, "items": n_items, "interactions": ds.n_interactions},
        dropped={
            "users": n_users - out.n_users,
            "items": n_items - out.n_items,
            "interactions": ds.n_interactions - int(keep.sum()),
        },
    )
    return out


def keep_interactions(ds: SeqDataset, keep: np.ndarray, extra_items: np.ndarray | None = None) -> SeqDataset:
    """``ds`` with only the interactions where ``keep`` is True (order unchanged): users left with none are removed,
    items renumbered 1..n by first appearance, then ``extra_items`` (internal ids of ``ds``) appended; the item table
    follows. ``meta`` is copied without ``options``/``dropped``/``raw``, which describe a preparation."""
    uid = np.repeat(np.arange(ds.n_users), ds.lengths)[keep]
    codes, uniq = pd.factorize(ds.items[keep], sort=False)
    if extra_items is not None and len(extra_items):
        uniq = np.concatenate([uniq, extra_items])
    uniq = np.asarray(uniq, dtype=np.int64)
    per_user = np.bincount(uid, minlength=ds.n_users)
    users_kept = np.flatnonzero(per_user > 0)
    offsets = np.zeros(len(users_kept) + 1, dtype=np.int64)
    np.cumsum(per_user[users_kept], out=offsets[1:])
    item_ids = np.asarray([PAD_TOKEN, *map(str, ds.item_ids[uniq].tolist())], dtype=object)  # one gather, not a loop
    rows = np.concatenate([[0], uniq]).astype(np.int64)
    if ds.item_table is not None:
        table = ds.item_table.iloc[rows].reset_index(drop=True)
    else:
        table = pd.DataFrame({"item_id": item_ids})
    return SeqDataset(
        name=ds.name,
        user_ids=np.asarray([*map(str, ds.user_ids[users_kept].tolist())], dtype=object),
        item_ids=item_ids,
        offsets=offsets,
        items=codes.astype(np.int64) + 1,
        timestamps=None if ds.timestamps is None else ds.timestamps[keep],
        item_table=table,
        meta={k: v for k, v in ds.meta.items() if k not in ("options", "dropped", "raw")},
    )
