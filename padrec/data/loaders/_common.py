"""Shared parsing helpers: every loader reports bad input as a located :class:`DataError`.

Loaders collect flat interaction arrays in file order and call :func:`build`, which sorts each user's
interactions *stably* by time (ties keep file order: an unstable sort would silently change the
leave-one-out targets) and hands per-user sequences to :func:`~padrec.data.dataset.from_sequences`.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset, from_sequences
from padrec.data.errors import DataError

ENCODING = "utf-8"

# Star ratings are not part of SeqDataset (models never see them); a raw dataset keeps them in this
# private attribute, aligned with ``ds.items``, so that ``prepare`` can apply ``min_rating``.
_RATINGS_ATTR = "_padrec_ratings"


def ratings_of(ds: SeqDataset) -> np.ndarray | None:
    """Per-interaction ratings of a raw dataset (aligned with ``ds.items``), or ``None``."""
    return ds.__dict__.get(_RATINGS_ATTR)


def attach_ratings(ds: SeqDataset, ratings: np.ndarray | None) -> SeqDataset:
    if ratings is not None:
        object.__setattr__(ds, _RATINGS_ATTR, np.asarray(ratings, dtype=np.float32))
    return ds


def read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "expected a file, found a folder") from None


def decode(data: bytes, path: Path, encoding: str = ENCODING) -> str:
    """Decode ``data``; an undecodable byte is reported with its line and the encoding expected."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            path,
            f"byte 0x{data[e.start]:02x} at column {col} is not valid {encoding.upper()}: padrec expects "
            f"{encoding.upper()} text here (re-save the file as {encoding.upper()})",
            line=line,
        ) from None


def read_text(path: Path, encoding: str = ENCODING) -> str:
    return decode(read_bytes(path), path, encoding)


def sniff_sep(path: Path, header: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab", ".inter", ".item"):
        return "\t"
    if suffix == ".csv" and "," in header:
        return ","
    for sep in ("\t", ",", ";", "|"):
        if sep in header:
            return sep
    return ","


_PANDAS_LINE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def read_table(path: str | Path, sep: str | None = None, what: str = "table") -> pd.DataFrame:
    """Read a CSV/TSV/Parquet table; every value is a string (CSV) and the index is the source line.

    The index labels are 1-based line numbers (CSV) or row numbers (Parquet, ``df.attrs['rows']``) so
    later checks can point at the offending line (a quoted value spanning lines shifts the count).
    Blank lines are dropped, not reported.
    """
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path, what)
    text = read_text(path)
    if not text.strip():
        raise DataError(path, f"the file is empty: expected a header line and {what} rows")
    header_line = text.split("\n", 1)[0].rstrip("\r")
    sep = sep or sniff_sep(path, header_line)
    header = (
        [h.strip() for h in next(csv.reader([header_line], delimiter=sep))]
        if len(sep) == 1
        else [h.strip() for h in header_line.split(sep)]
    )
    seen: set[str] = set()
    for k, name in enumerate(header):
        if not name:  # e.g. the unnamed index column pandas writes
            header[k] = name = f"_unnamed{k}"
        if name in seen:
            raise DataError(path, f"duplicate column name {name!r} in the header", line=1, field=name)
        seen.add(name)
    try:
        with warnings.catch_warnings():  # rows longer than the header: pandas would shift them into an index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                io.StringIO(text),
                sep=sep,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=False,
                index_col=False,
                engine="c" if len(sep) == 1 else "python",
            )
    except pd.errors.ParserWarning:
        line, n = _first_long_row(text, sep, len(header))
        raise DataError(path, f"expected {len(header)} fields (as in the header), found {n}", line=line) from None
    except pd.errors.ParserError as e:
        m = _PANDAS_LINE.search(str(e))
        if m:
            message = f"expected {m.group(1)} fields (as in the header), found {m.group(3)}"
            raise DataError(path, message, line=int(m.group(2))) from None
        raise DataError(path, f"cannot parse as a {sep!r}-separated table: {e}") from None
    df.columns = header
    df.index = pd.RangeIndex(2, 2 + len(df))
    df = df[~(df == "").all(axis=1)] if len(df.columns) else df
    if len(df) == 0:
        raise DataError(path, f"no {what} rows after the header line", line=2)
    df.attrs["rows"] = False
    return df


def _first_long_row(text: str, sep: str, n_fields: int) -> tuple[int | None, int]:
    """(line, field count) of the first row with more fields than the header (error path only)."""
    rows = csv.reader(io.StringIO(text), delimiter=sep) if len(sep) == 1 else (r.split(sep) for r in text.splitlines())
    for k, row in enumerate(rows, 1):
        if len(row) > n_fields:
            return k, len(row)
    return None, n_fields + 1


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as e:
        raise DataError(path, f"cannot read as Parquet: {e}") from None
    names = table.column_names
    for name in names:
        if names.count(name) > 1:
            raise DataError(path, f"duplicate column name {name!r}", field=name)
    df = table.to_pandas()
    if len(df) == 0:
        raise DataError(path, f"the file has no {what} rows")
    df.index = pd.RangeIndex(1, 1 + len(df))
    df.attrs["rows"] = True
    return df


def where(df: pd.DataFrame, label: int) -> dict:
    """Location keywords for DataError: CSV lines go in ``line``; Parquet rows go in the message."""
    return {} if df.attrs.get("rows") else {"line": int(label)}


def fail(path: Path, df: pd.DataFrame, label: int, field: str, message: str) -> DataError:
    if df.attrs.get("rows"):
        message = f"row {label}: {message}"
    return DataError(path, message, field=field, **where(df, label))


#: loader options the ``padrec`` commands also take as ``--user-col`` etc. (padrec.cli_options)
_CLI_COLUMN_OPTIONS = ("user_col", "item_col", "time_col", "item_id_col")


def require_columns(df: pd.DataFrame, path: Path, wanted: dict[str, str]) -> None:
    """``wanted`` maps a column name to the option that names it, for a message saying how to fix it."""
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        have = ", ".join(map(repr, df.columns))
        hints = ", ".join(f"{wanted[c]}=" for c in missing)
        flags = [f"--{wanted[c].replace('_', '-')}" for c in missing if wanted[c] in _CLI_COLUMN_OPTIONS]
        if flags:
            hints += f" ({', '.join(flags)} on the command line)"
        raise DataError(
            path,
            f"missing column(s) {', '.join(map(repr, missing))}; the header has {have} "
            f"(name the right columns with {hints})",
            line=None if df.attrs.get("rows") else 1,
        )


def id_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """External ids as Python strings; an empty id is an error at its line."""
    s = df[col]
    if pd.api.types.is_float_dtype(s.dtype) and s.notna().all() and (s % 1 == 0).all():
        s = s.astype(np.int64)  # Parquet ints that went through float: keep "5", not "5.0"
    bad = s.isna()
    if pd.api.types.is_string_dtype(s.dtype) or s.dtype == object:
        bad = bad | (s.astype(str).str.strip() == "")
    if bad.any():
        label = s.index[np.argmax(bad.to_numpy())]
        raise fail(path, df, label, col, "empty id")
    return np.asarray(s.astype(str).str.strip().to_numpy(), dtype=object)


def int_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Integer timestamps: unix seconds (ints or floats, floored) or ISO 8601 date-times."""
    s = df[col]
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if s.isna().any():
            raise fail(path, df, s.index[np.argmax(s.isna().to_numpy())], col, "missing date-time")
        s = s.dt.tz_localize("UTC") if s.dt.tz is None else s
        return ((s - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        if s.isna().any():
            label = s.index[np.argmax(s.isna().to_numpy())]
            raise fail(path, df, label, col, "expected an integer, got nothing")
        if s.dtype.kind == "f":
            return np.floor(s.to_numpy(np.float64)).astype(np.int64)
        return s.to_numpy(np.int64)
    text = s.astype(str).str.strip()
    num = pd.to_numeric(text, errors="coerce")
    if num.notna().all():
        return np.floor(num.to_numpy(np.float64)).astype(np.int64)
    dt = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    if dt.notna().all():
        return ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    bad = (num.isna() & dt.isna()).to_numpy()
    if not bad.any():
        bad = num.isna().to_numpy()
    label = s.index[np.argmax(bad)]
    raise fail(path, df, label, col, f"expected an integer (unix time) or an ISO 8601 date-time, got {text[label]!r}")


def float_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    s = df[col]
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        num = s.astype(np.float64)
    else:
        num = pd.to_numeric(s.astype(str).str.strip(), errors="coerce")
    if num.isna().any():
        label = s.index[np.argmax(num.isna().to_numpy())]
        raise fail(path, df, label, col, f"expected a number, got {str(s[label])!r}")
    return num.to_numpy(np.float64)


def build(
    name: str,
    users: Sequence[str] | np.ndarray,
    items: Sequence[str] | np.ndarray,
    timestamps: np.ndarray | None = None,
    ratings: np.ndarray | None = None,
    item_table: pd.DataFrame | None = None,
    meta: dict | None = None,
    keep_unseen_items: bool = False,
) -> SeqDataset:
    """Turn flat interactions (file order) into a dataset: users by first appearance, each user's
    items stably sorted by timestamp (ties keep file order). ``keep_unseen_items``: item-table rows
    without interactions become items too (see :func:`~padrec.data.dataset.from_sequences`)."""
    users = np.asarray(users, dtype=object)
    items = np.asarray(items, dtype=object)
    codes, uniques = pd.factorize(pd.Series(users, dtype=object), sort=False)
    order = (
        np.lexsort((np.asarray(timestamps), codes))  # lexsort is stable
        if timestamps is not None
        else np.argsort(codes, kind="stable")
    )
    bounds = np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1]
    seqs = np.split(items[order], bounds)
    ts = np.split(np.asarray(timestamps, dtype=np.int64)[order], bounds) if timestamps is not None else None
    ds = from_sequences(name, list(uniques), seqs, ts, item_table, meta, keep_unseen_items)
    ds = finish(ds)
    return attach_ratings(ds, None if ratings is None else np.asarray(ratings)[order])


def finish(ds: SeqDataset) -> SeqDataset:
    """Normalise the item table: text columns are strings with ``""`` for unknown (the pad row too)."""
    table = ds.item_table
    if table is not None:
        for col in table.columns:
            values = ["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
                      for v in table[col]]  # fmt: skip
            table[col] = pd.Series(values, index=table.index, dtype=object)
    return ds


def parse_sequence_lines(path: Path, text: str, what: str = "sequence") -> tuple[list[str], list[list[str]]]:
    """``user item item ...`` per line (whitespace-separated); a repeated user is an error."""
    users: list[str] = []
    seqs: list[list[str]] = []
    first_line: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        user = parts[0]
        if user in first_line:
            message = f"user {user!r} appears again (first on line {first_line[user]}): one line per user"
            raise DataError(path, message, line=n)
        first_line[user] = n
        users.append(user)
        seqs.append(parts[1:])
    if not users:
        raise DataError(path, f"the file is empty: expected one line per user, `user item item ...` ({what})")
    return users, seqs


def source_meta(files: dict[str, Path]) -> dict:
    return {"source_files": {role: str(p) for role, p in files.items()}}


def title_year(title: str) -> str:
    """The trailing ``(1995)`` of a MovieLens title, or an empty string."""
    m = re.search(r"\((\d{4})\)\s*$", title)
    return m.group(1) if m else ""
