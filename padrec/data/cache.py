"""Prepared datasets cached as plain NumPy/Parquet files, keyed by what produced them.

A cache entry is ``cache_dir()/<name>-<key>/`` holding ``offsets.npy``, ``items.npy``, ``user_ids.npy``
(fixed-width unicode, so ``np.load(allow_pickle=False)`` reads everything), optional
``timestamps.npy``, ``items.parquet`` (the item table, row ``i`` = internal id ``i``) and
``manifest.json``. The key hashes the source files' names, sizes and sha256, the loader, the
options, the padrec version and the cache format: change any and a new entry is prepared; nothing is
ever overwritten in place. Entries are written to a temporary folder and renamed into place, so a
crash leaves no half entry. Source hashes are remembered by (path, size, mtime) in
``cache_dir()/sources.json`` so a cached load only stats the sources.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

import padrec
from padrec.data.dataset import SeqDataset
from padrec.data.errors import DataError
from padrec.data.paths import cache_dir
from padrec.data.prepare import PrepOptions, prepare
from padrec.utils import atomic_write_text, sha256_file, sha256_text

FORMAT = 1
MANIFEST = "manifest.json"
_MEMO = "sources.json"


class _HashMemo:
    """sha256 of source files remembered by (path, size, mtime_ns); saved only when asked."""

    def __init__(self, root: Path) -> None:
        self.path = root / _MEMO
        self.dirty = False
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self.data, dict):
                self.data = {}
        except (OSError, ValueError):
            self.data = {}

    def sha256(self, path: Path) -> tuple[int, str]:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DataError(path, "source file not found") from None
        key = str(path.resolve())
        hit = self.data.get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return st.st_size, hit["sha256"]
        digest = sha256_file(path)
        self.data[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self.dirty = True
        return st.st_size, digest

    def save(self) -> None:
        if self.dirty:
            try:
                atomic_write_text(self.path, json.dumps(self.data, indent=0, sort_keys=True))
                self.dirty = False
            except OSError:
                pass  # only a speed-up


def fingerprint(files: dict[str, Path], memo: _HashMemo | None = None) -> list[dict]:
    memo = memo or _HashMemo(cache_dir())
    out = []
    for role, path in sorted(files.items()):
        size, digest = memo.sha256(Path(path))
        out.append({"role": role, "file": Path(path).name, "path": str(path), "size": size, "sha256": digest})
    return out


def cache_key(loader: str, sources: list[dict], options: PrepOptions) -> str:
    ident = {
        "format": FORMAT,
        "padrec": padrec.__version__,
        "loader": loader,
        "sources": [[s["role"], s["file"], s["size"], s["sha256"]] for s in sources],
        "options": options.model_dump(mode="json"),
    }
    return sha256_text(json.dumps(ident, sort_keys=True))[:16]


def entry_dir(name: str, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"
    return cache_dir() / f"{safe}-{key}"


def save(ds: SeqDataset, directory: Path, manifest: dict) -> None:
    """Write ``ds`` as a cache entry at ``directory`` atomically (temp folder + rename)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        np.save(tmp / "offsets.npy", np.asarray(ds.offsets, dtype=np.int64))
        np.save(tmp / "items.npy", np.asarray(ds.items, dtype=np.int64))
        np.save(tmp / "user_ids.npy", np.asarray([str(u) for u in ds.user_ids], dtype=str))
        if ds.timestamps is not None:
            np.save(tmp / "timestamps.npy", np.asarray(ds.timestamps, dtype=np.int64))
        table = ds.item_table if ds.item_table is not None else pd.DataFrame({"item_id": ds.item_ids})
        table = table.assign(item_id=[str(i) for i in ds.item_ids]).astype(str)
        table.to_parquet(tmp / "items.parquet", index=False)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        try:
            os.replace(tmp, directory)
        except OSError:
            # an entry is already there (another process, or a damaged one): keep a good one
            if load(directory) is not None:
                return
            trash = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
            os.replace(directory, trash / "entry")
            os.replace(tmp, directory)
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load(directory: Path) -> SeqDataset | None:
    """Read a cache entry; ``None`` if it is missing or damaged (it is then simply prepared again)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            return None
        offsets = np.load(directory / "offsets.npy", allow_pickle=False)
        items = np.load(directory / "items.npy", allow_pickle=False)
        user_ids = np.load(directory / "user_ids.npy", allow_pickle=False).astype(object)
        ts_path = directory / "timestamps.npy"
        timestamps = np.load(ts_path, allow_pickle=False) if ts_path.exists() else None
        table = pd.read_parquet(directory / "items.parquet")
    except (OSError, ValueError, KeyError):
        return None
    item_ids = np.asarray(table["item_id"].tolist(), dtype=object)
    table = table.astype(object)
    if len(offsets) != len(user_ids) + 1 or offsets[-1] != len(items):
        return None
    meta = dict(manifest.get("meta", {}))
    meta["cache"] = {"dir": str(directory), "key": manifest.get("key"), "hit": True}
    return SeqDataset(
        name=manifest["name"],
        user_ids=user_ids,
        item_ids=item_ids,
        offsets=offsets,
        items=items,
        timestamps=timestamps,
        item_table=table,
        meta=meta,
    )


def load_prepared(
    name: str,
    files: dict[str, Path],
    load_raw: Callable[[], SeqDataset],
    options: PrepOptions,
    loader: str,
    use_cache: bool = True,
) -> SeqDataset:
    """The prepared dataset: from the cache when an entry for exactly these sources/options exists,
    else ``prepare(load_raw(), options)``, then cached. Nothing is written when loading fails."""
    if not use_cache:
        ds = prepare(load_raw(), options)
        ds.meta["cache"] = {"hit": False, "dir": None}
        return ds
    memo = _HashMemo(cache_dir())
    sources = fingerprint(files, memo)
    key = cache_key(loader, sources, options)
    directory = entry_dir(name, key)
    if (hit := load(directory)) is not None:
        memo.save()
        return hit
    t0 = time.perf_counter()
    ds = prepare(load_raw(), options)
    ds.meta["sources"] = [{k: s[k] for k in ("role", "file", "size", "sha256")} for s in sources]
    manifest = {
        "format": FORMAT,
        "padrec_version": padrec.__version__,
        "name": ds.name,
        "key": key,
        "loader": loader,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prepare_seconds": round(time.perf_counter() - t0, 3),
        "sources": sources,
        "options": options.model_dump(mode="json"),
        "counts": {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions},
        "meta": ds.meta,
    }
    try:
        save(ds, directory, manifest)
        memo.save()
    except OSError as e:
        warnings.warn(f"could not cache prepared dataset {name!r} in {directory.parent}: {e}", stacklevel=2)
    ds.meta["cache"] = {"dir": str(directory), "key": key, "hit": False}
    return ds
