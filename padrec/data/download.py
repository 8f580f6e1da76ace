"""Fetch a dataset's public original into ``data_dir/<name>/``: checksummed, all-or-nothing.

Everything is streamed into a hidden temporary folder inside the data dir (same file system, so the
final rename is atomic), checked (Content-Length, expected size, sha256 when known, zip integrity,
and that the files the loader needs are there), extracted, and only then moved into place. On any
failure the temporary folder is removed: no partial file is ever left where a loader would find it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import padrec
from padrec.data.errors import DataError
from padrec.data.paths import data_dir as _data_dir
from padrec.data.registry import DATASETS, DatasetSpec, Download, _unknown, candidate_folders

CHUNK = 1 << 20


def download(
    name: str,
    data_dir: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download ``name`` (a registry name, or any name when ``url`` is given) and return its folder.

    ``url``/``sha256`` override the registry (a mirror, or a local server in tests). A dataset already
    present is not fetched again unless ``url`` is given.
    """
    spec = DATASETS.get(name)
    if spec is None and url is None:
        raise DataError(None, _unknown(name))
    root = _data_dir(data_dir)
    target = root / name
    if url is None:
        assert spec is not None
        found = _find(spec, root)
        if found is not None:
            return found
        if not spec.downloads:
            raise DataError(None, f"dataset {name!r} has no public download; see {spec.homepage}")
        sources = list(spec.downloads)
        if sha256 is not None:
            if len(sources) != 1:
                raise DataError(None, f"dataset {name!r} has {len(sources)} files: give --url with --sha256")
            sources = [Download(sources[0].url, sha256, sources[0].size, sources[0].subdir)]
    else:
        sources = [Download(url, sha256)]

    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".download", dir=root))
    try:
        out = work / "out"
        out.mkdir()
        for k, src in enumerate(sources):
            fname = _file_name(src.url) or f"file{k}"
            part = work / f"{k}-{fname}.part"
            _fetch(src, part, progress)
            dest = out / src.subdir if src.subdir else out
            if zipfile.is_zipfile(part):
                _extract(part, dest, src.url)
            else:
                if fname.endswith(".gz"):
                    _check_gzip(part, src.url)
                dest.mkdir(parents=True, exist_ok=True)
                os.replace(part, dest / fname)
        if spec is not None and _find_in(spec, out) is None:
            raise DataError(
                sources[0].url,
                f"the download does not contain the files {name!r} needs ({spec.expected}); nothing was kept",
            )
        _move_into_place(out, target, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created_root:
            try:
                root.rmdir()
            except OSError:
                pass
        raise
    shutil.rmtree(work, ignore_errors=True)
    return target


def _file_name(url: str) -> str:
    return PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name


def _find(spec: DatasetSpec, root: Path) -> Path | None:
    for folder in candidate_folders(root, spec):
        if spec.find(folder):
            return folder
    return None


def _find_in(spec: DatasetSpec, folder: Path) -> Path | None:
    for cand in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if spec.find(cand):
            return cand
    return None


def _fetch(src: Download, dest: Path, progress: bool) -> None:
    """Stream ``src.url`` to ``dest``; raise DataError on HTTP errors, truncation, size or sha256 mismatch."""
    req = urllib.request.Request(src.url, headers={"User-Agent": f"padrec/{padrec.__version__}"})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        raise DataError(src.url, f"download failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(src.url, f"download failed: {getattr(e, 'reason', e)}") from None
    h = hashlib.sha256()
    got = 0
    with resp:
        header = resp.headers.get("Content-Length")
        expected = int(header) if header and header.isdigit() else None
        label = _file_name(src.url) or src.url
        with open(dest, "wb") as f:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.IncompleteRead, OSError) as e:
                    raise DataError(src.url, f"download truncated after {got:,} bytes ({e})") from None
                if not chunk:
                    break
                f.write(chunk)
                h.update(chunk)
                got += len(chunk)
                if progress:
                    total = f"/{expected / 1e6:.1f}" if expected else ""
                    line = f"\rdownloading {label}: {got / 1e6:.1f}{total} MB"
                    print(line, end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
    if expected is not None and got != expected:
        raise DataError(
            src.url, f"download truncated: received {got:,} of {expected:,} bytes (Content-Length); try again"
        )
    if src.size is not None and got != src.size:
        raise DataError(src.url, f"unexpected size: expected {src.size:,} bytes, received {got:,}")
    digest = h.hexdigest()
    if src.sha256 is not None and digest != src.sha256.lower():
        raise DataError(
            src.url,
            f"checksum mismatch: expected sha256 {src.sha256.lower()}, got {digest}; the download was deleted",
        )


def _check_gzip(path: Path, url: str) -> None:
    """Read a .gz to the end: a truncated or corrupt one fails here, not at load time."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(url, f"not a valid gzip file ({e}); nothing was kept") from None


def _extract(archive: Path, dest: Path, url: str) -> None:
    """Extract a zip, dropping a single top-level folder; members escaping ``dest`` are refused."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
            named = [m for m in members if m.filename.strip("/")]
            tops = {PurePosixPath(m.filename).parts[0] for m in named}
            strip = len(tops) == 1 and all(len(PurePosixPath(m.filename).parts) > 1 or m.is_dir() for m in named)
            for m in members:
                parts = PurePosixPath(m.filename).parts[1 if strip else 0 :]
                if not parts:
                    continue
                if m.filename.startswith("/") or ".." in parts or ":" in parts[0]:
                    raise DataError(url, f"refusing to extract {m.filename!r}: it points outside the folder")
                out = dest.joinpath(*parts)
                if m.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK)
    except zipfile.BadZipFile as e:
        raise DataError(url, f"not a valid zip archive ({e}); nothing was kept") from None
    archive.unlink()


def _move_into_place(out: Path, target: Path, work: Path) -> None:
    """Rename ``out`` to ``target`` (atomic); if ``target`` exists, replace its entries one by one."""
    if not target.exists():
        os.replace(out, target)
        return
    old = work / "old"
    old.mkdir()
    for entry in sorted(out.iterdir()):
        dest = target / entry.name
        if dest.exists():
            os.replace(dest, old / entry.name)
        os.replace(entry, dest)
