"""MIND news recommendation (public format): ``news.tsv`` + ``behaviors.tsv``, in one folder or in
several (``MINDsmall_train/``, ``MINDsmall_dev/``), which are merged.

A user's sequence is their click history (which predates the log) followed by the impressions they
clicked (``N123-1``), in time order; ties keep file order, train before dev. History clicks have no
time of their own: they get the earliest time in the log, so a global time split keeps them in training.
Repeated clicks on the same article are kept (they are real events). News never clicked is left out.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset
from padrec.data.errors import DataError
from padrec.data.loaders._common import build, read_text, source_meta

EXPECTED = "behaviors.tsv and news.tsv (in the folder or in sub-folders such as MINDsmall_train/)"
NEWS_COLUMNS = [
    "news_id", "category", "subcategory", "title", "abstract", "url", "title_entities", "abstract_entities",
]  # fmt: skip
BEHAVIOR_COLUMNS = ["impression_id", "user_id", "time", "history", "impressions"]
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


def find_mind(folder: Path) -> dict[str, Path] | None:
    """``{"<sub>/behaviors": path, "<sub>/news": path}`` for every folder holding both files."""
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if folder.is_dir() else []
    files: dict[str, Path] = {}
    for d in candidates:
        if (d / "behaviors.tsv").is_file() and (d / "news.tsv").is_file():
            key = "." if d == folder else d.name
            files[f"{key}/behaviors"] = d / "behaviors.tsv"
            files[f"{key}/news"] = d / "news.tsv"
        if d == folder and files:
            break  # the folder itself is a MIND split: don't mix in sub-folders
    return files or None


def _tsv(path: Path, columns: list[str], required: int) -> pd.DataFrame:
    text = read_text(path)
    if not text.strip():
        raise DataError(path, f"the file is empty: expected tab-separated {', '.join(columns)}")
    df = pd.read_csv(
        io.StringIO(text), sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE,
        na_filter=False, keep_default_na=False, skip_blank_lines=False,
    )  # fmt: skip
    if df.shape[1] < required:
        raise DataError(
            path, f"expected at least {required} tab-separated fields ({', '.join(columns[:required])}), "
            f"found {df.shape[1]}", line=1,
        )  # fmt: skip
    df = df.iloc[:, : len(columns)]
    df.columns = columns[: df.shape[1]]
    df.index = pd.RangeIndex(1, 1 + len(df))
    return df[~(df == "").all(axis=1)]


def load_mind_files(files: dict[str, Path], name: str = "mind") -> SeqDataset:
    splits = sorted({k.rsplit("/", 1)[0] for k in files}, key=lambda s: (s != "." and "dev" in s.lower(), s))
    news_parts, rows = [], []
    for split in splits:
        news = _tsv(files[f"{split}/news"], NEWS_COLUMNS, 4)
        news_parts.append(news.set_index("news_id"))
        path = files[f"{split}/behaviors"]
        beh = _tsv(path, BEHAVIOR_COLUMNS, 5)
        times = pd.to_datetime(beh["time"].str.strip(), format=TIME_FORMAT, errors="coerce")
        if times.isna().any():
            label = beh.index[np.argmax(times.isna().to_numpy())]
            raise DataError(
                path, f"expected a time like '11/15/2019 8:55:22 AM', got {beh['time'][label]!r}",
                line=int(label), field="time",
            )  # fmt: skip
        beh = beh.assign(seconds=(times - pd.Timestamp(0)) // pd.Timedelta(seconds=1))
        rows.append(beh)
    beh = pd.concat(rows, ignore_index=True)
    beh = beh.iloc[np.argsort(beh["seconds"].to_numpy(), kind="stable")]
    t0 = int(beh["seconds"].min())
    users: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    seen: set[str] = set()
    for user, history, impressions, t in zip(
        beh["user_id"], beh["history"], beh["impressions"], beh["seconds"], strict=True
    ):
        if user not in seen:
            seen.add(user)
            hist = history.split()
            users.extend([user] * len(hist))
            items.extend(hist)
            stamps.extend([t0] * len(hist))
        for token in impressions.split():
            nid, _, label = token.rpartition("-")
            if label == "1" and nid:
                users.append(user)
                items.append(nid)
                stamps.append(int(t))
    silent = len(seen) - len(set(users))  # users with neither history nor clicks: nothing to learn from
    news = pd.concat(news_parts)
    news = news[~news.index.duplicated(keep="first")]
    cats = news["category"].str.cat(news["subcategory"], sep=", ") if "subcategory" in news else news["category"]
    table = pd.DataFrame(
        {
            "title": news["title"],
            "abstract": news["abstract"] if "abstract" in news else "",
            "categories": cats,
        },
        index=news.index,
    )
    table = table[table.index.isin(set(items))]
    meta = {**source_meta(files), "family": "mind"}
    ds = build(name, users, items, np.asarray(stamps, dtype=np.int64), None, table, meta)
    if silent:
        ds.meta["users_without_clicks"] = silent
    return ds


def load_mind(folder: str | Path, name: str = "mind") -> SeqDataset:
    folder = Path(folder)
    files = find_mind(folder)
    if files is None:
        raise DataError(folder, f"no MIND files here: expected {EXPECTED}")
    return load_mind_files(files, name)
