"""RecBole atomic files: ``<name>.inter`` (+ optional ``<name>.item``), tab-separated, typed headers.

Header fields read ``name:type`` (``user_id:token item_id:token rating:float timestamp:float``).
``.item`` columns of type ``token``/``token_seq`` become text columns (a ``movie_title`` column is also
offered as ``title``). Published ``.item`` files list unrated items too, so extra rows are dropped here,
unlike :func:`~padrec.data.loaders.own.load_interactions`, where they signal an id mismatch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from padrec.data.dataset import SeqDataset
from padrec.data.errors import DataError
from padrec.data.loaders._common import build, float_column, id_column, int_column, read_table, source_meta

TEXT_TYPES = ("token", "token_seq")


def find_recbole(target: str | Path) -> dict[str, Path]:
    """``dir/`` (holding ``dir/<dir>.inter`` or a single ``*.inter``), ``x.inter`` or the prefix ``x``."""
    target = Path(target)
    if target.is_dir():
        inter = target / f"{target.name}.inter"
        if not inter.is_file():
            hits = sorted(target.glob("*.inter"))
            if len(hits) != 1:
                raise DataError(target, f"expected one RecBole .inter file here, found {len(hits)}")
            inter = hits[0]
    elif target.suffix == ".inter":
        inter = target
    else:
        inter = target.with_name(target.name + ".inter")
    if not inter.is_file():
        raise DataError(inter, "RecBole interaction file not found (expected <name>.inter)")
    files = {"interactions": inter}
    if (item := inter.with_suffix(".item")).is_file():
        files["items"] = item
    return files


def _typed(df: pd.DataFrame, path: Path) -> dict[str, tuple[str, str]]:
    """``field name -> (column, type)``; a column without ``:type`` is an error at the header."""
    out = {}
    for col in df.columns:
        fname, sep, ftype = col.partition(":")
        if not sep:
            raise DataError(path, f"header field {col!r} has no ':type' (e.g. 'user_id:token')", line=1)
        out[fname] = (col, ftype)
    return out


def load_recbole(dir_or_prefix: str | Path, name: str | None = None) -> SeqDataset:
    files = find_recbole(dir_or_prefix)
    path = files["interactions"]
    df = read_table(path, "\t", what="interaction")
    fields = _typed(df, path)
    for need in ("user_id", "item_id"):
        if need not in fields:
            have = ", ".join(map(repr, df.columns))
            raise DataError(path, f"missing field '{need}:token'; the header has {have}", line=1, field=need)
    users = id_column(df, fields["user_id"][0], path)
    items = id_column(df, fields["item_id"][0], path)
    ts = int_column(df, fields["timestamp"][0], path) if "timestamp" in fields else None
    ratings = float_column(df, fields["rating"][0], path) if "rating" in fields else None
    table = _items(files["items"], items) if "items" in files else None
    meta = {**source_meta(files), "family": "recbole"}
    return build(name or path.stem, users, items, ts, ratings, table, meta)


def _items(path: Path, items) -> pd.DataFrame:
    df = read_table(path, "\t", what="item")
    fields = _typed(df, path)
    if "item_id" not in fields:
        raise DataError(path, "missing field 'item_id:token'", line=1, field="item_id")
    ids = id_column(df, fields["item_id"][0], path)
    text = {
        fname: df[col].astype(str).to_numpy()
        for fname, (col, ftype) in fields.items()
        if fname != "item_id" and ftype in TEXT_TYPES
    }
    table = pd.DataFrame(text, index=pd.Index(ids, dtype=object))
    if "title" not in table and (alias := next((c for c in table if c.endswith("title")), None)):
        table = table.rename(columns={alias: "title"})
    table = table[~table.index.duplicated(keep="first")]
    return table[table.index.isin(set(items))]
