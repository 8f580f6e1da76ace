"""Your own data: an interactions table (CSV/TSV/Parquet) or a one-line-per-user sequence file.

Text files must be UTF-8. Ids are kept as strings exactly as written (``007`` stays ``007``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset
from padrec.data.errors import DataError
from padrec.data.loaders._common import (
    Factorized,
    build,
    fail,
    fast_columns,
    fast_header,
    float_column,
    id_column,
    int_column,
    parse_sequence_lines,
    read_table,
    read_text,
    require_columns,
    source_meta,
)


def load_interactions(
    path: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str | None = None,
    rating_col: str | None = None,
    items_path: str | Path | None = None,
    item_id_col: str | None = None,
    sep: str | None = None,
    name: str | None = None,
    text_cols: Sequence[str] | None = None,
) -> SeqDataset:
    """One row per interaction; each user's rows are sorted stably by ``time_col`` (ties keep file order).

    ``time_col``/``rating_col`` default to the columns ``timestamp``/``rating`` when present (no time
    column: file order is the order). Timestamps are integers (unix time) or ISO 8601 date-times.
    ``items_path`` is an optional item table: ``item_id_col`` (default: ``item_col``, else ``item``) plus
    text columns (``title``, ...; ``text_cols`` keeps only those). Its rows whose id never occurs in the
    interactions are kept as items without interactions: the brand-new items PAD scores from text alone
    (counted in ``meta['new_items']``); when *no* id matches, the two files surely use different ids and
    that is an error.
    """
    path = Path(path)
    fast = _fast(path, sep, user_col, item_col, time_col, rating_col)
    if fast is not None:
        users, items, ts, ratings = fast
    else:  # the careful reader: same result on good input, a located error on bad input
        df = read_table(path, sep, what="interaction")
        if time_col is None and "timestamp" in df.columns:
            time_col = "timestamp"
        if rating_col is None and "rating" in df.columns:
            rating_col = "rating"
        wanted = {user_col: "user_col", item_col: "item_col"}
        if time_col:
            wanted[time_col] = "time_col"
        if rating_col:
            wanted[rating_col] = "rating_col"
        require_columns(df, path, wanted)
        users = id_column(df, user_col, path)
        items = id_column(df, item_col, path)
        ts = int_column(df, time_col, path) if time_col else None
        ratings = float_column(df, rating_col, path) if rating_col else None
        del df
    files = {"interactions": path, **({"items": Path(items_path)} if items_path is not None else {})}
    meta = {**source_meta(files), "family": "own"}
    table = None
    if items_path is not None:
        table, meta["new_items"] = _item_table(Path(items_path), item_id_col, item_col, items, path, text_cols)
    return build(name or path.stem, users, items, ts, ratings, table, meta, keep_unseen_items=True)


def _fast(
    path: Path, sep: str | None, user_col: str, item_col: str, time_col: str | None, rating_col: str | None
) -> tuple[Factorized, Factorized, np.ndarray | None, np.ndarray | None] | None:
    """The columns via pyarrow (ids factorized, no Python object per row), or None: read carefully."""
    head = fast_header(path, sep)
    if head is None:
        return None
    header, sep = head
    time_col = time_col or ("timestamp" if "timestamp" in header else None)
    rating_col = rating_col or ("rating" if "rating" in header else None)
    cols = [user_col, item_col, *(c for c in (time_col, rating_col) if c)]
    if len(set(cols)) != len(cols) or any(c not in header for c in cols):
        return None  # the careful path names what is missing
    got = fast_columns(path, sep, header, [user_col, item_col], [time_col] if time_col else [],
                       [rating_col] if rating_col else [])  # fmt: skip
    if got is None:
        return None
    ts = got[time_col] if time_col else None
    ratings = got[rating_col] if rating_col else None
    return got[user_col], got[item_col], ts, ratings  # type: ignore[return-value]


def _item_table(
    path: Path,
    id_col: str | None,
    item_col: str,
    items: np.ndarray | Factorized,
    inter_path: Path,
    text_cols: Sequence[str] | None,
) -> tuple[pd.DataFrame, int]:
    """The item table indexed by external id, and how many of its items have no interactions."""
    df = read_table(path, what="item")
    if id_col is None:
        id_col = item_col if item_col in df.columns else "item"
    require_columns(df, path, {id_col: "item_id_col", **{c: "text_cols" for c in text_cols or ()}})
    ids = id_column(df, id_col, path)
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        label = df.index[np.argmax(dup)]
        raise fail(path, df, label, id_col, f"item id {ids[np.argmax(dup)]!r} is listed more than once")
    known = set(items.uniques.tolist() if isinstance(items, Factorized) else items)
    new = sum(1 for i in ids if i not in known)
    if new == len(ids):
        shown = ", ".join(map(repr, ids[:5]))
        raise DataError(
            path,
            f"none of its {len(ids)} item ids occurs in the interactions of {inter_path.name} (first ids: {shown}): "
            f"check that item_id_col ({id_col!r}) and item_col ({item_col!r}) name the same ids",
            field=id_col,
        )
    text = df[list(text_cols)] if text_cols else df.drop(columns=[id_col])
    text = text.astype(str)
    text.index = pd.Index(ids, dtype=object)
    return text, new


def load_sequence_file(path: str | Path, name: str | None = None) -> SeqDataset:
    """One line per user, ``user item item ...`` (whitespace-separated, oldest first, no timestamps)."""
    path = Path(path)
    users, seqs = parse_sequence_lines(path, read_text(path))
    if not any(seqs):
        raise DataError(path, "no items: every line holds only a user id (expected `user item item ...`)")
    flat_users = np.repeat(np.asarray(users, dtype=object), [len(s) for s in seqs])
    flat_items = np.asarray([i for s in seqs for i in s], dtype=object)
    meta = {**source_meta({"sequences": path}), "family": "own"}
    return build(name or path.stem, flat_users, flat_items, meta=meta)
