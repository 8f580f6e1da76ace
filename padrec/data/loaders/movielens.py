"""MovieLens 1M and 100K in their GroupLens layouts (plus the shared ``sequences.txt`` view of ml-1m).

Users are ordered by their numeric GroupLens id; each user's ratings are sorted stably by timestamp
(ties keep file order). Movies listed in the catalogue but never rated are left out of the item
table: GroupLens catalogues list them on purpose, so this is not a sign of a broken join.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset
from padrec.data.errors import DataError
from padrec.data.loaders._common import (
    build,
    decode,
    float_column,
    id_column,
    int_column,
    parse_sequence_lines,
    read_bytes,
    read_text,
    source_meta,
    title_year,
)

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

ML1M_EXPECTED = "ratings.dat (GroupLens zip layout) or sequences.txt, optionally movies.dat"
ML100K_EXPECTED = "u.data, optionally u.item and u.genre"


def find_ml1m(folder: Path) -> dict[str, Path] | None:
    """Source files of ml-1m in ``folder``; ``ratings.dat`` wins because it has stars and timestamps."""
    files: dict[str, Path] = {}
    if (folder / "ratings.dat").is_file():
        files["ratings"] = folder / "ratings.dat"
    elif (folder / "sequences.txt").is_file():
        files["sequences"] = folder / "sequences.txt"
    else:
        return None
    if (folder / "movies.dat").is_file():
        files["movies"] = folder / "movies.dat"
    return files


def find_ml100k(folder: Path) -> dict[str, Path] | None:
    if not (folder / "u.data").is_file():
        return None
    files = {"ratings": folder / "u.data"}
    for role, fname in (("items", "u.item"), ("genres", "u.genre")):
        if (folder / fname).is_file():
            files[role] = folder / fname
    return files


def _by_numeric_user(df: pd.DataFrame) -> pd.DataFrame:
    key = pd.to_numeric(df["user"], errors="coerce")
    if key.notna().all():
        return df.iloc[np.argsort(key.to_numpy(), kind="stable")]
    return df


def _ratings_table(path: Path, sep: str, raw_sep_name: str) -> pd.DataFrame:
    layout = f"`user{raw_sep_name}item{raw_sep_name}rating{raw_sep_name}timestamp`"
    text = read_text(path)
    if not text.strip():
        raise DataError(path, f"the file is empty: expected {layout} lines")
    if sep == "::":
        # a single-character split is ~10x faster than the python engine; "::" gives empty odd fields
        usecols, names = [0, 2, 4, 6], list(range(7))
        csv_sep = ":"
    else:
        usecols, names, csv_sep = [0, 1, 2, 3], list(range(4)), sep
    try:
        df = pd.read_csv(
            io.StringIO(text), sep=csv_sep, header=None, names=names, usecols=usecols, dtype=str,
            na_filter=False, keep_default_na=False, skip_blank_lines=False,
        )  # fmt: skip
    except pd.errors.ParserError as e:
        raise DataError(path, f"expected {layout}: {e}") from None
    df.columns = ["user", "item", "rating", "timestamp"]
    df.index = pd.RangeIndex(1, 1 + len(df))
    df = df[~(df == "").all(axis=1)]
    df.attrs["rows"] = False
    return df


def _interactions(name: str, path: Path, sep: str, sep_name: str, table: pd.DataFrame | None, meta: dict) -> SeqDataset:
    df = _by_numeric_user(_ratings_table(path, sep, sep_name))
    users = id_column(df, "user", path)
    items = id_column(df, "item", path)
    ratings = float_column(df, "rating", path)
    ts = int_column(df, "timestamp", path)
    return build(name, users, items, ts, ratings, _only_rated(table, items), meta)


def _only_rated(table: pd.DataFrame | None, items: np.ndarray) -> pd.DataFrame | None:
    if table is None:
        return None
    rated = pd.Index(pd.unique(pd.Series(items, dtype=object)))
    return table[table.index.isin(rated)]


def _movies_dat(path: Path) -> pd.DataFrame:
    text = decode(read_bytes(path), path, "latin-1")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 3:
            raise DataError(path, f"expected `MovieID::Title::Genres`, found {len(parts)} field(s)", line=n)
        mid, title, genres = parts
        rows.append((mid.strip(), title.strip(), ", ".join(g for g in genres.strip().split("|") if g)))
    table = pd.DataFrame(rows, columns=["item", "title", "genres"]).set_index("item")
    table["year"] = [title_year(t) for t in table["title"]]
    return _unique_index(table, path)


def _unique_index(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    dup = table.index[table.index.duplicated()]
    if len(dup):
        raise DataError(path, f"item id {dup[0]!r} is listed more than once")
    return table


def load_ml1m_files(files: dict[str, Path], name: str = "ml-1m") -> SeqDataset:
    """ml-1m from ``ratings.dat`` (``u::i::r::ts``) or ``sequences.txt`` (order only), + ``movies.dat``."""
    table = _movies_dat(files["movies"]) if "movies" in files else None
    meta = {**source_meta(files), "family": "movielens"}
    if "ratings" in files:
        return _interactions(name, files["ratings"], "::", "::", table, meta)
    path = files["sequences"]
    users, seqs = parse_sequence_lines(path, read_text(path))
    flat_users = np.repeat(np.asarray(users, dtype=object), [len(s) for s in seqs])
    flat_items = np.asarray([i for s in seqs for i in s], dtype=object)
    return build(name, flat_users, flat_items, None, None, _only_rated(table, flat_items), meta)


def _u_item(path: Path, genres: list[str]) -> pd.DataFrame:
    text = decode(read_bytes(path), path, "latin-1")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 5:
            layout = "`id|title|release|video|url|genre flags...`"
            raise DataError(path, f"expected {layout}, found {len(parts)} field(s)", line=n)
        flags = parts[5:]
        names = [genres[k] for k, f in enumerate(flags) if f.strip() == "1" and k < len(genres)]
        release = parts[2].strip()
        year = release[-4:] if release[-4:].isdigit() else title_year(parts[1])
        rows.append((parts[0].strip(), parts[1].strip(), ", ".join(names), year))
    table = pd.DataFrame(rows, columns=["item", "title", "genres", "year"]).set_index("item")
    return _unique_index(table, path)


def _u_genre(path: Path) -> list[str]:
    names: dict[int, str] = {}
    for n, line in enumerate(decode(read_bytes(path), path, "latin-1").splitlines(), 1):
        if not line.strip():
            continue
        name, _, idx = line.rpartition("|")
        if not idx.strip().isdigit():
            raise DataError(path, f"expected `name|index`, got {line!r}", line=n)
        names[int(idx)] = name
    return [names.get(k, "") for k in range(max(names) + 1)] if names else list(ML100K_GENRES)


def load_ml100k_files(files: dict[str, Path], name: str = "ml-100k") -> SeqDataset:
    """ml-100k from ``u.data`` (tab-separated ``user item rating ts``) + ``u.item``/``u.genre``."""
    genres = _u_genre(files["genres"]) if "genres" in files else list(ML100K_GENRES)
    table = _u_item(files["items"], genres) if "items" in files else None
    meta = {**source_meta(files), "family": "movielens"}
    return _interactions(name, files["ratings"], "\t", "<TAB>", table, meta)


def load_movielens(folder: str | Path, name: str | None = None) -> SeqDataset:
    """Load an ml-1m or ml-100k folder, whichever layout it holds."""
    folder = Path(folder)
    if files := find_ml1m(folder):
        return load_ml1m_files(files, name or "ml-1m")
    if files := find_ml100k(folder):
        return load_ml100k_files(files, name or "ml-100k")
    raise DataError(folder, f"no MovieLens files here: expected {ML1M_EXPECTED} (ml-1m) or {ML100K_EXPECTED} (ml-100k)")
