"""Amazon review datasets (2014): the S3Rec/P5 ``user_sequence.txt`` or McAuley's original review files.

Layouts understood, in order of preference:
- ``user_sequence.txt``: ``USER ASIN ASIN ...`` per line, already chronological (no timestamps);
  Beauty titles join through ``item_id_to_int.json`` (ASIN -> product id) and ``products_lookup.csv``
  (``,global_product_id,name``).
- ``reviews_<Category>_5.json.gz`` (what ``padrec data download`` fetches): one JSON review per line
  with ``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``; the optional ``meta_<Category>.json.gz``
  adds ``title``, ``categories`` and ``brand``.
Item ids are ASINs, user ids the reviewer ids of the file.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset
from padrec.data.errors import DataError
from padrec.data.loaders._common import (
    build,
    decode,
    parse_sequence_lines,
    read_bytes,
    read_table,
    read_text,
    source_meta,
)

EXPECTED = (
    "user_sequence.txt (+ item_id_to_int.json and products_lookup.csv for titles) "
    "or reviews_<Category>_5.json.gz (+ meta_<Category>.json.gz)"
)


def _first(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    for pattern in patterns:
        hits = sorted(p for p in folder.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
    return None


def find_amazon(folder: Path) -> dict[str, Path] | None:
    files: dict[str, Path] = {}
    if (folder / "user_sequence.txt").is_file():
        files["sequences"] = folder / "user_sequence.txt"
    elif reviews := _first(folder, ("reviews_*.json.gz", "reviews_*.json")):
        files["reviews"] = reviews
    else:
        return None
    if (folder / "item_id_to_int.json").is_file() and (folder / "products_lookup.csv").is_file():
        files["title_ids"] = folder / "item_id_to_int.json"
        files["titles"] = folder / "products_lookup.csv"
    if meta := _first(folder, ("meta_*.json.gz", "meta_*.json")):
        files["meta"] = meta
    return files


def _read_maybe_gz(path: Path) -> str:
    data = read_bytes(path)
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(path, f"not a complete gzip file ({e}); download it again") from None
    return decode(data, path)


def _reviews(path: Path) -> tuple[list[str], list[str], list[int], list[float]]:
    users, items, ts, stars = [], [], [], []
    for n, line in enumerate(_read_maybe_gz(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"not a JSON object: {e.msg}", line=n) from None
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in rec:
                raise DataError(path, "missing key in the review", line=n, field=key)
        try:
            t = int(rec["unixReviewTime"])
        except (TypeError, ValueError):
            raise DataError(
                path, f"expected an integer, got {rec['unixReviewTime']!r}", line=n, field="unixReviewTime"
            ) from None
        users.append(str(rec["reviewerID"]))
        items.append(str(rec["asin"]))
        ts.append(t)
        stars.append(float(rec.get("overall", np.nan)))
    if not users:
        raise DataError(path, "the file is empty: expected one JSON review per line")
    return users, items, ts, stars


_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


def _meta(path: Path, wanted: set[str]) -> pd.DataFrame:
    """Title/categories/brand for the ASINs in ``wanted``; lines are JSON (2018) or Python literals (2014)."""
    rows = {}
    for n, line in enumerate(_read_maybe_gz(path).splitlines(), 1):
        m = _ASIN.search(line)
        if not m or m.group(1) not in wanted:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            try:
                rec = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                raise DataError(path, "not a JSON object or Python dict literal", line=n) from None
        cats = rec.get("categories", rec.get("category", []))
        flat: list[str] = []
        for c in cats:
            for name in c if isinstance(c, list) else [c]:
                if isinstance(name, str) and name not in flat:
                    flat.append(name)
        rows[m.group(1)] = {
            "title": str(rec.get("title", "") or ""),
            "categories": ", ".join(flat),
            "brand": str(rec.get("brand", "") or ""),
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["title", "categories", "brand"])


def _titles(id_path: Path, names_path: Path, wanted: np.ndarray) -> pd.DataFrame:
    try:
        ids = json.loads(read_text(id_path))
    except json.JSONDecodeError as e:
        raise DataError(id_path, f"not valid JSON: {e.msg}", line=e.lineno) from None
    if not isinstance(ids, dict):
        raise DataError(id_path, "expected a JSON object {ASIN: product id}")
    lookup = read_table(names_path, ",", what="product")
    for col in ("global_product_id", "name"):
        if col not in lookup.columns:
            raise DataError(names_path, f"missing column {col!r}; expected `,global_product_id,name`", line=1)
    names = dict(zip(lookup["global_product_id"].str.strip(), lookup["name"], strict=True))
    asins = pd.unique(pd.Series(wanted, dtype=object))
    titles = [names.get(str(ids.get(a, "")), "") for a in asins]
    return pd.DataFrame({"title": titles}, index=pd.Index(asins, dtype=object))


def load_amazon_files(files: dict[str, Path], name: str) -> SeqDataset:
    meta = {**source_meta(files), "family": "amazon"}
    if "sequences" in files:
        path = files["sequences"]
        users, seqs = parse_sequence_lines(path, read_text(path))
        flat_users = np.repeat(np.asarray(users, dtype=object), [len(s) for s in seqs])
        flat_items = np.asarray([i for s in seqs for i in s], dtype=object)
        ts = stars = None
    else:
        u, i, t, r = _reviews(files["reviews"])
        flat_users, flat_items = np.asarray(u, dtype=object), np.asarray(i, dtype=object)
        ts, stars = np.asarray(t, dtype=np.int64), np.asarray(r, dtype=np.float64)
        if np.isnan(stars).all():
            stars = None
    table = None
    if "meta" in files:
        table = _meta(files["meta"], set(flat_items))
    if "titles" in files:
        titles = _titles(files["title_ids"], files["titles"], flat_items)
        table = titles if table is None else titles.join(table.drop(columns=["title"]), how="left")
    return build(name, flat_users, flat_items, ts, stars, table, meta)


def load_amazon(folder: str | Path, name: str | None = None) -> SeqDataset:
    """Load an Amazon folder in any of the layouts above; ``name`` defaults to the folder name."""
    folder = Path(folder)
    files = find_amazon(folder)
    if files is None:
        raise DataError(folder, f"no Amazon review files here: expected {EXPECTED}")
    return load_amazon_files(files, name or folder.name)
