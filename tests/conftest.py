"""Shared test fixtures.

The licensed datasets live outside the repository in ``../shared/datasets`` (never committed);
tests that need one skip when it is missing. Every test session gets its own prepared-data cache so
tests never read or write the user's cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"

#: registry name -> folder under DATA
FOLDERS = {
    "ml-1m": "ml-1m",
    "ml-100k": "ml-100k",
    "amazon-beauty": "amazon-beauty-2014",
    "amazon-sports": "amazon-sports-2014",
    "amazon-toys": "amazon-toys-2014",
}


def needs_data(name: str) -> Path:
    """The folder of dataset ``name`` under DATA, or skip the test."""
    folder = DATA / FOLDERS[name]
    if not folder.is_dir():
        pytest.skip(f"dataset {name} not available at {folder}")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory):
    """A private PADREC_CACHE for the session, and PADREC_DATA pointing at the shared datasets."""
    saved = {k: os.environ.get(k) for k in ("PADREC_CACHE", "PADREC_DATA")}
    os.environ["PADREC_CACHE"] = str(tmp_path_factory.mktemp("padrec-cache"))
    if DATA.is_dir():
        os.environ["PADREC_DATA"] = str(DATA)
    else:
        os.environ.pop("PADREC_DATA", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def data_root() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared datasets not available at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def ml1m_raw():
    from padrec.data.registry import load_raw

    needs_data("ml-1m")
    return load_raw("ml-1m", DATA)


@pytest.fixture(scope="session")
def beauty_raw():
    from padrec.data.registry import load_raw

    needs_data("amazon-beauty")
    return load_raw("amazon-beauty", DATA)


@pytest.fixture(scope="session")
def ml100k_raw():
    from padrec.data.registry import load_raw

    needs_data("ml-100k")
    return load_raw("ml-100k", DATA)


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run fastest on it, and the machine's cores are shared with other jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ml100k_split():
    """ml-100k, leave-one-out (module scope: tests may add items to a dataset's catalogue)."""
    from padrec.data.registry import load_dataset
    from padrec.data.split import leave_one_out

    needs_data("ml-100k")
    return leave_one_out(load_dataset("ml-100k"))


@pytest.fixture(scope="module")
def smollm2():
    """PALR's default LM (module scope: some tests cast it to bfloat16 in place); skipped when not installed."""
    pytest.importorskip("transformers")
    from padrec.palr.lm import ModelNotFoundError, check_lm, load_causal_lm

    try:
        check_lm("smollm2")
    except ModelNotFoundError as e:
        pytest.skip(str(e))
    return load_causal_lm("smollm2")


@pytest.fixture(autouse=True)
def _loud_again():
    """A CLI call with ``--json``/``--quiet`` silences padrec for the process: undo it after each test, so a test
    that reads progress lines does not depend on which tests ran before it."""
    yield
    from padrec.progress import set_quiet

    set_quiet(False)
