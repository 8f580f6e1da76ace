"""Shared parsing helpers: every loader reports bad input as a located :class:`DataError`.

Loaders collect flat interaction arrays in file order and call :func:`build`, which sorts each user's
interactions *stably* by time (ties keep file order: an unstable sort would silently change the
leave-one-out targets) and hands the sorted columns to :func:`~padrec.data.dataset.from_codes`.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset, from_codes
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
    users: Sequence[str] | np.ndarray | Factorized,
    items: Sequence[str] | np.ndarray | Factorized,
    timestamps: np.ndarray | None = None,
    ratings: np.ndarray | None = None,
    item_table: pd.DataFrame | None = None,
    meta: dict | None = None,
    keep_unseen_items: bool = False,
) -> SeqDataset:
    """Turn flat interactions (file order) into a dataset: users by first appearance, each user's
    items stably sorted by timestamp (ties keep file order). ``keep_unseen_items``: item-table rows
    without interactions become items too (see :func:`~padrec.data.dataset.from_sequences`).

    Ids may come already factorized (the fast reader's :class:`Factorized`); everything here is array
    work, so a 5e7-row log costs a few sorts, not a Python object per row."""
    u = users if isinstance(users, Factorized) else _factorize(users, as_str=False)
    it = items if isinstance(items, Factorized) else _factorize(items, as_str=True)
    order = (
        np.lexsort((np.asarray(timestamps), u.codes))  # lexsort is stable
        if timestamps is not None
        else np.argsort(u.codes, kind="stable")
    )
    counts = np.bincount(u.codes, minlength=len(u.uniques))
    offsets = np.zeros(len(u.uniques) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # items are numbered by first appearance in the sorted sequences, as from_sequences numbers them
    codes, first = pd.factorize(it.codes[order], sort=False)
    ts = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)[order]
    rated = None if ratings is None else np.asarray(ratings)[order]
    del order
    ds = from_codes(name, u.uniques, offsets, codes, it.uniques[first], ts, item_table, meta, keep_unseen_items)
    return attach_ratings(finish(ds), rated)


def _factorize(values: Sequence[str] | np.ndarray, as_str: bool) -> Factorized:
    """Codes by first appearance; ``as_str``: ids that print alike (5 and "5") are one id, as strings are."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object), dtype=object), sort=False)
    names = np.asarray([str(x) for x in uniques], dtype=object) if as_str else np.asarray(uniques, dtype=object)
    if as_str and len(set(names.tolist())) < len(names):
        codes, uniques = pd.factorize(pd.Series([str(x) for x in values], dtype=object), sort=False)
        names = np.asarray(list(uniques), dtype=object)
    return Factorized(codes, names)


def finish(ds: SeqDataset) -> SeqDataset:
    """Normalise the item table: text columns are strings with ``""`` for unknown (the pad row too)."""
    table = ds.item_table
    if table is not None:
        for col in table.columns:
            s = table[col]
            if s.dtype != object and pd.api.types.is_string_dtype(s.dtype):  # strings or missing: no loop needed
                values = s.fillna("").to_numpy(dtype=object)
            else:
                values = ["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
                          for v in s]  # fmt: skip
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


# -- fast columnar path ---------------------------------------------------------------------------------------
# Large interaction logs (1e7+ rows) are read by pyarrow into columns: ids dictionary-encoded (one Python string
# per distinct id, none per row), times and ratings as typed arrays. It accepts only input that the careful
# pandas path above reads the same way; on anything unusual it returns None and the caller reads the file
# again carefully, which gives the same result or the located error. tests/test_scaling.py checks both agree.


class Factorized(NamedTuple):
    """Ids as ``codes`` (row -> position in ``uniques``) and ``uniques`` (str, in order of first appearance)."""

    codes: np.ndarray
    uniques: np.ndarray


_PARQUET = (".parquet", ".pq")


def fast_header(path: Path, sep: str | None = None) -> tuple[list[str], str | None] | None:
    """(column names, separator) as :func:`read_table` would name them, or None when the fast reader
    cannot promise the same reading (odd header, multi-character separator, not UTF-8, no file)."""
    try:
        if path.suffix.lower() in _PARQUET:
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
            return (names, None) if len(set(names)) == len(names) else None
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
        line = first.decode("utf-8-sig").rstrip("\n").rstrip("\r")
    except Exception:
        return None
    if not line.strip() or '"' in line or not first.endswith(b"\n"):
        return None
    sep = sep or sniff_sep(path, line)
    if len(sep) != 1 or sep in '\r\n"':
        return None
    names = [h.strip() for h in line.split(sep)]
    if any(not n for n in names) or len(set(names)) != len(names):
        return None
    return names, sep


def fast_columns(
    path: Path,
    sep: str | None,
    header: list[str],
    ids: Sequence[str],
    ints: Sequence[str] = (),
    floats: Sequence[str] = (),
) -> dict[str, Factorized | np.ndarray] | None:
    """The named columns of a table with no anomaly, or None (the caller then reads it carefully).

    ``ids`` come back as :class:`Factorized` (stripped strings, as :func:`id_column` makes them), ``ints`` as
    int64 (integers only; the careful path also reads decimals and dates), ``floats`` as float64 (no NaN).
    """
    import pyarrow as pa

    wanted = [*ids, *ints, *floats]
    try:
        if path.suffix.lower() in _PARQUET:
            table = _fast_parquet(path, wanted)
        else:
            table = _fast_csv(path, sep, header, ids, ints, floats)
    except (pa.ArrowException, OSError, ValueError):
        return None
    if table is None or table.num_rows == 0:
        return None
    out: dict[str, Factorized | np.ndarray] = {}
    for col in ids:
        f = _fast_ids(table.column(col))
        if f is None:
            return None
        out[col] = f
    for col in ints:
        a = table.column(col)
        if a.null_count or not pa.types.is_integer(a.type):
            return None
        v = a.to_numpy().astype(np.int64, copy=False)
        if len(v) and max(abs(int(v.min())), abs(int(v.max()))) > 2**53:  # the careful path goes through float64
            return None
        out[col] = v
    for col in floats:
        a = table.column(col)
        if a.null_count or not (pa.types.is_integer(a.type) or pa.types.is_floating(a.type)):
            return None
        v = a.to_numpy().astype(np.float64)
        if np.isnan(v).any():
            return None
        out[col] = v
    return out


def _fast_csv(
    path: Path, sep: str | None, header: list[str], ids: Sequence[str], ints: Sequence[str], floats: Sequence[str]
) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    types = {**{c: pa.string() for c in ids}, **{c: pa.int64() for c in ints}, **{c: pa.float64() for c in floats}}
    return pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(column_names=header, skip_rows=1, block_size=16 << 20),
        parse_options=pcsv.ParseOptions(
            delimiter=sep or ",", quote_char='"', double_quote=True, escape_char=False, newlines_in_values=True
        ),
        convert_options=pcsv.ConvertOptions(
            include_columns=list(types),
            column_types=types,
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=True,
        ),
    )


def _fast_parquet(path: Path, wanted: Sequence[str]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(wanted))
    for name in table.column_names:
        t = table.schema.field(name).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
                or pa.types.is_floating(t)):  # fmt: skip
            return None  # dates, booleans...: the careful path knows what they mean
    return table


def _fast_ids(column: Any) -> Factorized | None:
    """Dictionary-encode one id column: one Python string per distinct id; None if any id is unusual."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = column.type
    if pa.types.is_dictionary(column.type):
        column, t = column.cast(t.value_type), t.value_type
    if column.null_count:
        return None
    if pa.types.is_integer(t):
        pass  # str(int) below, as the careful path writes Parquet integer ids
    elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return None  # floats (ints that went through float) and others: the careful path's rules
    enc = pc.dictionary_encode(column)
    chunks = [c for c in enc.chunks if len(c)]
    if not chunks:
        return None
    uniques = chunks[-1].dictionary  # the encoder's table grows chunk by chunk: the last one holds every id
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int32, copy=False)
    names = np.asarray([str(u) for u in uniques.to_pylist()], dtype=object)
    stripped = [s.strip() for s in names]
    if any(not s or s != n or '"' in s for s, n in zip(stripped, names, strict=True)):
        return None  # empty or padded ids, stray quotes: leave them to the careful path
    return Factorized(codes, names)
