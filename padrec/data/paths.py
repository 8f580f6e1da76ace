"""Where datasets are read from and where prepared copies are cached.

The data directory may be read-only (a shared folder of licensed files), so nothing but an explicit
``padrec data download`` ever writes there; prepared caches always go to :func:`cache_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATA_ENV = "PADREC_DATA"
CACHE_ENV = "PADREC_CACHE"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding dataset folders: ``explicit``, else ``$PADREC_DATA``, else a user cache folder."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("padrec")) / "data"


def cache_dir() -> Path:
    """The folder for prepared datasets: ``$PADREC_CACHE``, else a user cache folder (never the data dir)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("padrec")) / "prepared"
