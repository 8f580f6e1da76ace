"""padrec: sequential recommendation made better with language models (PAD, PALR) and baselines.

The facade (:mod:`padrec.api`) is imported on first use, so ``import padrec`` stays light::

    import padrec
    ds = padrec.load("ml-1m")
    model = padrec.SASRec(max_epochs=20).fit(ds)
    print(model.evaluate())
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_FACADE = ("BERT4Rec", "BPRMF", "Caser", "Dataset", "GRU4Rec", "Model", "NCF", "PAD", "Pop", "SASRec", "load",
           "load_model")  # fmt: skip
__all__ = ["__version__", *_FACADE]


def __getattr__(name: str) -> Any:
    if name in _FACADE:
        from padrec import api

        return getattr(api, name)
    raise AttributeError(f"module 'padrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FACADE])
