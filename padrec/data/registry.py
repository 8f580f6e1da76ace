"""Named datasets, where their files are looked for, and the one entry point models use.

``load_dataset("ml-1m")`` finds the files under the data directory (:func:`padrec.data.paths.data_dir`),
loads them, applies the benchmark preprocessing (:data:`padrec.data.prepare.BENCHMARK_OPTIONS`) and
caches the result; a path instead of a name loads your own data by its extension.

The table below is explicit on purpose: adding a dataset is one entry, and ``padrec data list``
prints exactly this. Download checksums for the GroupLens zips are those published in TensorFlow
Datasets' ``url_checksums/movielens.txt`` (they could not be re-checked from this machine); the
others are unknown, so those archives are only checked by size and by the files they must contain.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from padrec.data.dataset import SeqDataset
from padrec.data.errors import DataError
from padrec.data.loaders import amazon, mind, movielens, own, recbole
from padrec.data.paths import data_dir as _data_dir
from padrec.data.prepare import PrepOptions, benchmark_options


@dataclass(frozen=True)
class Download:
    """One public file of a dataset. Zips are extracted; a single top-level folder is dropped."""

    url: str
    sha256: str | None = None
    size: int | None = None
    subdir: str = ""  # extract/place under data_dir/<name>/<subdir>


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    folders: tuple[str, ...]  # folder names accepted under the data dir, in order of preference
    find: Callable[[Path], dict[str, Path] | None]  # the source files in a folder, or None
    load: Callable[[dict[str, Path], str], SeqDataset]
    expected: str  # the files `find` looks for, for error messages
    downloads: tuple[Download, ...] = ()
    homepage: str = ""
    terms: str = ""
    notes: tuple[str, ...] = field(default=())


_GROUPLENS_TERMS = "research use only, cite Harper & Konstan (2015), no redistribution (GroupLens README)"
_AMAZON_TERMS = "research use; cite He & McAuley (WWW 2016) and McAuley et al. (SIGIR 2015)"
_MIND = "https://mind201910small.blob.core.windows.net/release"
_SNAP = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"


def _amazon(name: str, category: str, what: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        description=f"Amazon {what} 2014, 5-core reviews as sequences (S3Rec/P5 files or the originals)",
        folders=(name, f"{name}-2014"),
        find=amazon.find_amazon,
        load=amazon.load_amazon_files,
        expected=amazon.EXPECTED,
        downloads=(
            Download(f"{_SNAP}/reviews_{category}_5.json.gz"),
            Download(f"{_SNAP}/meta_{category}.json.gz"),
        ),
        homepage="https://jmcauley.ucsd.edu/data/amazon/",
        terms=_AMAZON_TERMS,
    )


DATASETS: dict[str, DatasetSpec] = {
    "ml-1m": DatasetSpec(
        name="ml-1m",
        description="MovieLens 1M: 6,040 users, 3,706 movies, 1,000,209 ratings; titles, genres",
        folders=("ml-1m", "movielens-1m", "ML-1M"),
        find=movielens.find_ml1m,
        load=movielens.load_ml1m_files,
        expected=movielens.ML1M_EXPECTED,
        downloads=(
            Download(
                "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                size=5917549,
            ),
        ),
        homepage="https://grouplens.org/datasets/movielens/1m/",
        terms=_GROUPLENS_TERMS,
    ),
    "ml-100k": DatasetSpec(
        name="ml-100k",
        description="MovieLens 100K: 943 users, 1,682 movies, 100,000 ratings; titles, genres",
        folders=("ml-100k", "movielens-100k", "ML-100K"),
        find=movielens.find_ml100k,
        load=movielens.load_ml100k_files,
        expected=movielens.ML100K_EXPECTED,
        downloads=(
            Download(
                "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                size=4924029,
            ),
        ),
        homepage="https://grouplens.org/datasets/movielens/100k/",
        terms=_GROUPLENS_TERMS,
    ),
    "amazon-beauty": _amazon("amazon-beauty", "Beauty", "Beauty"),
    "amazon-sports": _amazon("amazon-sports", "Sports_and_Outdoors", "Sports and Outdoors"),
    "amazon-toys": _amazon("amazon-toys", "Toys_and_Games", "Toys and Games"),
    "mind": DatasetSpec(
        name="mind",
        description="MIND news clicks (Microsoft): history + clicked impressions per user; titles, abstracts",
        folders=("mind", "MIND", "MINDsmall", "mind-small"),
        find=mind.find_mind,
        load=mind.load_mind_files,
        expected=mind.EXPECTED,
        downloads=(
            Download(f"{_MIND}/MINDsmall_train.zip", subdir="train"),
            Download(f"{_MIND}/MINDsmall_dev.zip", subdir="dev"),
        ),
        homepage="https://msnews.github.io/",
        terms="Microsoft Research License Terms (accept them on the MIND homepage before downloading)",
        notes=("the official blob URLs have been reported offline; pass --url for a mirror",),
    ),
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(None, _unknown(name)) from None


def _unknown(name: str) -> str:
    return (
        f"unknown dataset {name!r}: known names are {', '.join(DATASETS)}; a path to your own file or "
        f"folder also works. Fetch a named one with `padrec data download NAME`."
    )


def candidate_folders(root: Path, spec: DatasetSpec) -> list[Path]:
    out = []
    for alias in spec.folders:
        base = root / alias
        if base.is_dir():
            out.append(base)
            out.extend(sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if root.name in spec.folders and root.is_dir():  # --data-dir pointing at the dataset folder itself
        out.append(root)
    return out


def locate(name: str, data_dir: str | Path | None = None) -> tuple[Path, dict[str, Path]]:
    """The folder holding ``name`` and its source files; a clear error if it is not there."""
    spec = get_spec(name)
    root = _data_dir(data_dir)
    for folder in candidate_folders(root, spec):
        files = spec.find(folder)
        if files:
            return folder, files
    looked = ", ".join(str(root / a) for a in spec.folders)
    archives = [root / f"{a}.zip" for a in spec.folders if (root / f"{a}.zip").is_file()]
    hint = f" Found {archives[0].name} there: unzip it in place." if archives else ""
    raise DataError(
        root,
        f"dataset {name!r} not found: looked in {looked} (and their sub-folders) for {spec.expected}.{hint} "
        f"Fetch it with `padrec data download {name}`, or point --data-dir / $PADREC_DATA at the folder "
        f"that holds {spec.folders[0]}/.",
    )


@dataclass(frozen=True)
class _Source:
    name: str
    files: dict[str, Path]
    load: Callable[[], SeqDataset]
    loader: str
    options: PrepOptions


#: Options of :func:`padrec.data.loaders.own.load_interactions` that name columns (``columns=`` below).
COLUMN_OPTIONS = ("user_col", "item_col", "time_col", "rating_col", "item_id_col", "text_cols", "sep")


def _check_own_options(key: str, items: str | Path | None, columns: dict[str, Any]) -> None:
    unknown = sorted(set(columns) - set(COLUMN_OPTIONS))
    if unknown:
        raise DataError(
            None, f"unknown column option(s) {', '.join(map(repr, unknown))}; known: {', '.join(COLUMN_OPTIONS)}"
        )
    if (items is not None or columns) and key in DATASETS:
        given = "an items file" if items is not None else f"column option(s) {', '.join(columns)}"
        raise DataError(
            None,
            f"{given} given for the named dataset {key!r}: those are for your own interaction files "
            "(CSV/TSV/Parquet); named datasets bring their own item text",
        )


def _resolve(
    name_or_path: str | Path,
    data_dir: str | Path | None,
    items: str | Path | None = None,
    columns: dict[str, Any] | None = None,
) -> _Source:
    key = str(name_or_path)
    columns = {k: v for k, v in (columns or {}).items() if v is not None}
    _check_own_options(key, items, columns)
    if items is not None or columns:
        return _resolve_own(Path(name_or_path).expanduser(), items, columns)
    if key in DATASETS:
        spec = DATASETS[key]
        _, files = locate(key, data_dir)
        return _Source(key, files, partial(spec.load, files, key), f"registry:{key}", benchmark_options(key))
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _resolve_path(path, data_dir)
    if isinstance(name_or_path, Path) or "/" in key or "\\" in key or path.suffix:
        raise DataError(path, "no such file or folder (and not a dataset name: " + ", ".join(DATASETS) + ")")
    raise DataError(None, _unknown(key))


def _resolve_path(path: Path, data_dir: str | Path | None) -> _Source:
    name = path.stem if path.is_file() else path.name
    opts = PrepOptions()
    if path.is_dir():
        for spec in DATASETS.values():  # a registry folder given by path: same name, same benchmark options
            if path.name in spec.folders and (files := spec.find(path)):
                sname = spec.name
                load = partial(spec.load, files, sname)
                return _Source(sname, files, load, f"registry:{sname}", benchmark_options(sname))
        if any(path.glob("*.inter")):
            files = recbole.find_recbole(path)
            return _Source(name, files, partial(recbole.load_recbole, path, name), "recbole", opts)
        for spec in DATASETS.values():
            if files := spec.find(path):
                return _Source(name, files, partial(spec.load, files, name), f"family:{spec.name}", opts)
        raise DataError(
            path,
            "no known data files in this folder: expected a RecBole <name>.inter or the files of a named "
            "dataset (" + "; ".join(f"{s.name}: {s.expected}" for s in DATASETS.values()) + ")",
        )
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".tab", ".parquet", ".pq"):
        load = partial(own.load_interactions, path, name=name)
        return _Source(name, {"interactions": path}, load, "interactions", opts)
    if suffix == ".txt":
        load = partial(own.load_sequence_file, path, name=name)
        return _Source(name, {"sequences": path}, load, "sequences", opts)
    if suffix == ".inter":
        files = recbole.find_recbole(path)
        return _Source(name, files, partial(recbole.load_recbole, path, name), "recbole", opts)
    raise DataError(
        path,
        f"unknown file type {suffix or '(none)'!r}: expected .csv/.tsv/.parquet (one interaction per row), "
        ".txt (one line per user: user item item ...) or .inter (RecBole atomic file)",
    )


def _resolve_own(path: Path, items: str | Path | None, columns: dict[str, Any]) -> _Source:
    """An interactions table with an items file and/or named columns."""
    if not path.is_file():
        raise DataError(path, "no such file (an items file or column options need an interactions file)")
    if path.suffix.lower() not in (".csv", ".tsv", ".tab", ".parquet", ".pq"):
        raise DataError(
            path,
            "an items file and column options go with a CSV/TSV/Parquet interactions file; sequence files have "
            "no columns and RecBole folders bring their own .item file",
        )
    files = {"interactions": path}
    if items is not None:
        items = Path(items).expanduser()
        if not items.is_file():
            raise DataError(items, "items file not found")
        files["items"] = items
    if isinstance(columns.get("text_cols"), str):
        columns["text_cols"] = [c.strip() for c in columns["text_cols"].split(",") if c.strip()]
    load = partial(own.load_interactions, path, name=path.stem, items_path=items, **columns)
    loader = "interactions:" + json.dumps(columns, sort_keys=True)  # other columns, other dataset: other cache key
    return _Source(path.stem, files, load, loader, PrepOptions())


def load_raw(
    name: str | Path,
    data_dir: str | Path | None = None,
    items: str | Path | None = None,
    columns: dict[str, Any] | None = None,
) -> SeqDataset:
    """The dataset exactly as in its files (no filtering, no cache); a name or a path."""
    return _resolve(name, data_dir, items, columns).load()


def load_dataset(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    options: PrepOptions | None = None,
    use_cache: bool = True,
    items: str | Path | None = None,
    columns: dict[str, Any] | None = None,
) -> SeqDataset:
    """The prepared dataset models train on.

    A registry name gets its benchmark options unless ``options`` is given; a path gets
    ``PrepOptions()`` by default. Results are cached (see :mod:`padrec.data.cache`).
    ``items`` (an item text table) and ``columns`` (:data:`COLUMN_OPTIONS`, e.g. ``{"user_col": "uid"}``)
    go with an interactions file; see :func:`padrec.data.loaders.own.load_interactions`.
    """
    from padrec.data.cache import load_prepared

    src = _resolve(name_or_path, data_dir, items, columns)
    return load_prepared(src.name, src.files, src.load, options or src.options, src.loader, use_cache)
