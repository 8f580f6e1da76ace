"""Sampled negatives for the secondary (sampled) protocol: drawn once, stored, reloaded.

Redrawn negatives make two runs incomparable (a different candidate list is a different test), so
the negatives of a (split, stage) are drawn once with ``numpy.random.default_rng(seed)`` and saved
as ``.npy`` under the prepared-data cache (``$PADREC_CACHE`` or the user cache folder). The file
name carries the dataset name and a hash of everything that defines the draw (sequences, split
targets and training prefixes, stage, sampler, count, seed, algorithm version), so a changed
dataset or split never silently reuses stale negatives.

Negatives never include any item of the user's whole sequence (past, target or future) and are
distinct within a user. ``popularity`` draws proportionally to training interaction counts (items
never seen in training are never drawn), ``uniform`` over all items.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from padrec.data.paths import cache_dir
from padrec.data.split import Split, Stage
from padrec.utils import atomic_path

Sampler = Literal["uniform", "popularity"]

#: bump when the drawing algorithm changes: old files are then ignored, not misread
ALGORITHM = "negatives-v1"
_ROUNDS = 64  # vectorised rejection rounds before falling back to exact per-user draws


def negatives_fingerprint(split: Split, stage: Stage, n: int, sampler: Sampler, seed: int) -> str:
    """Hex digest of everything that determines the draw."""
    ds = split.dataset
    h = hashlib.sha256()
    h.update(f"{ALGORITHM}|{split.kind}|{stage}|{sampler}|{n}|{seed}|{ds.n_items}|".encode())
    for arr in (
        ds.offsets,
        ds.items,
        split.users(stage),
        split.targets(stage),
        split.train_offsets,
        split.train_items,
    ):
        a = np.ascontiguousarray(arr, dtype=np.int64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def negatives_path(
    split: Split, stage: Stage, n: int, sampler: Sampler, seed: int, root: str | Path | None = None
) -> Path:
    """Where the negatives of this (split, stage, sampler, n, seed) are stored."""
    root = Path(root) if root is not None else cache_dir()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", split.dataset.name).strip("._") or "dataset"
    key = negatives_fingerprint(split, stage, n, sampler, seed)[:16]
    return root / "negatives" / f"{safe}-{split.kind}-{stage}-{sampler}{n}-seed{seed}-{key}.npy"


def load_or_draw_negatives(
    split: Split,
    stage: Stage = "test",
    n: int = 100,
    sampler: Sampler = "uniform",
    seed: int = 0,
    root: str | Path | None = None,
) -> np.ndarray:
    """``int64 [len(split.users(stage)), n]`` negatives, row-aligned with ``split.users(stage)``.

    Reads the stored file when a valid one exists, else draws and stores it atomically (a read-only
    cache only costs a warning: the draw itself is deterministic in ``seed``).
    """
    path = negatives_path(split, stage, n, sampler, seed, root)
    expected = (len(split.users(stage)), n)
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == expected and (arr.size == 0 or (arr.min() >= 1 and arr.max() <= split.n_items)):
                return arr.astype(np.int64, copy=False)
        except (OSError, ValueError):
            pass  # damaged: draw again and replace it
    arr = draw_negatives(split, stage, n, sampler, seed)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)  # via a handle: np.save(path) would append ".npy" to the temp name
    except OSError as e:
        warnings.warn(f"could not store negatives in {path.parent}: {e}", stacklevel=2)
    return arr


def _user_item_keys(split: Split, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ``row * (n_items + 1) + item`` over each listed user's whole sequence."""
    ds = split.dataset
    c = ds.n_items + 1
    starts, lengths = ds.offsets[users], ds.lengths[users]
    total = int(lengths.sum())
    before = np.zeros(len(users), dtype=np.int64)
    np.cumsum(lengths[:-1], out=before[1:])
    pos = np.repeat(starts - before, lengths) + np.arange(total, dtype=np.int64)
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    keys = np.unique(rows * c + ds.items[pos])
    return keys, np.bincount(keys // c, minlength=len(users))


def _in_sorted(x: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(x.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, x), len(sorted_keys) - 1)
    return sorted_keys[pos] == x


def draw_negatives(
    split: Split, stage: Stage = "test", n: int = 100, sampler: Sampler = "uniform", seed: int = 0
) -> np.ndarray:
    """Draw (without storing) ``n`` distinct negatives per user of ``stage``; see the module docstring.

    Vectorised rejection sampling: i.i.d. draws per user, dropping the user's own items and
    repeats. Keeping the first ``n`` survivors in draw order is successive sampling without
    replacement, i.e. the same distribution as ``rng.choice(..., replace=False, p=...)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    users = split.users(stage)
    c = split.n_items + 1
    u = len(users)
    keys, n_own = _user_item_keys(split, users)
    if sampler == "uniform":
        p = None
        available = split.n_items - n_own
    elif sampler == "popularity":
        w = split.train_item_counts.astype(np.float64).copy()
        w[0] = 0.0
        if w.sum() <= 0:
            raise ValueError("popularity sampler: the split has no training interactions")
        p = w / w.sum()
        positive = w > 0
        own_positive = np.bincount(keys[positive[keys % c]] // c, minlength=u)
        available = int(positive.sum()) - own_positive
    else:
        raise ValueError(f"unknown sampler {sampler!r}: expected 'uniform' or 'popularity'")
    if u and available.min() < n:
        bad = int((available < n).sum())
        raise ValueError(
            f"{bad} user(s) have fewer than {n} items left to draw as negatives "
            f"(fewest: {int(available.min())}); lower n_negatives"
        )
    rng = np.random.default_rng(seed)
    items = np.arange(c, dtype=np.int64)
    out = np.zeros((u, n), dtype=np.int64)
    filled = np.zeros(u, dtype=np.int64)
    pending = np.arange(u, dtype=np.int64)
    for _ in range(_ROUNDS):
        if len(pending) == 0:
            break
        m = 2 * int((n - filled[pending]).max()) + 8
        size = (len(pending), m)
        draws = rng.integers(1, c, size=size) if p is None else rng.choice(items, size=size, p=p)
        cand = np.concatenate([out[pending], draws], axis=1)  # accepted ones first: they survive
        key = pending[:, None] * c + cand
        ok = (cand != 0) & ~_in_sorted(key, keys)
        first = np.zeros(key.size, dtype=bool)
        first[np.unique(key.ravel(), return_index=True)[1]] = True
        ok &= first.reshape(key.shape)
        rank = np.cumsum(ok, axis=1)
        keep = ok & (rank <= n)
        r, col = np.nonzero(keep)
        block = np.zeros((len(pending), n), dtype=np.int64)
        block[r, rank[r, col] - 1] = cand[r, col]
        out[pending] = block
        filled[pending] = keep.sum(1)
        pending = pending[filled[pending] < n]
    for row in pending:  # rare: a user who needs nearly every remaining item; draw exactly
        own = keys[(keys // c) == row] % c
        mask = np.ones(c, dtype=bool)
        mask[0] = False
        mask[own] = False
        mask[out[row, : filled[row]]] = False
        pool = np.flatnonzero(mask if p is None else mask & (p > 0))
        q = None if p is None else p[pool] / p[pool].sum()
        out[row, filled[row] :] = rng.choice(pool, size=n - filled[row], replace=False, p=q)
    return out
