"""The one interface every recommender implements, and the registry that names them.

Models work on internal ids (``1..n_items``, 0 = padding) in ``score``; the public
``recommend`` takes and returns external ids so users never see our numbering.
A saved model is a directory with ``config.json``, ``items.json`` (external ids) and,
for trained models, ``model.pt`` (a plain state dict, loadable with ``weights_only=True``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from padrec.data.split import Split
from padrec.utils import atomic_write_text

_REGISTRY: dict[str, type[Recommender]] = {}


def _read_json(path: Path) -> Any:
    """A run file's JSON, or one line naming the file (and where the JSON breaks)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run directory is incomplete")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """``model.pt`` as a state dict; a truncated or foreign file is one line naming it, not a pickle traceback."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run directory is incomplete")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot be read as padrec weights ({first[:200]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


@contextmanager
def evaluating(net: torch.nn.Module | None) -> Iterator[None]:
    """Eval mode for one scoring call. Switches (and restores) only a net left in training mode, so
    concurrent ``score`` calls on a fitted or loaded model — always in eval mode — never race on it."""
    was = net is not None and net.training
    if was:
        net.eval()
    try:
        yield
    finally:
        if was:
            net.train()


def register(name: str) -> Callable[[type[Recommender]], type[Recommender]]:
    def deco(cls: type[Recommender]) -> type[Recommender]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def model_names() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[Recommender]:
    _import_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}") from None


def _import_builtin() -> None:
    import padrec.models
    import padrec.pad.recommender  # noqa: F401  (PAD's stages)


class Recommender(ABC):
    """``fit`` on a split, ``score`` histories over all items, ``recommend`` with external ids."""

    name: ClassVar[str] = ""

    def __init__(self, **config: Any) -> None:
        self.config: dict[str, Any] = dict(config)
        self.item_ids: np.ndarray | None = None  # external ids, index = internal id
        self.titles: list[str] | None = None

    # -- to implement -------------------------------------------------------------------
    @abstractmethod
    def fit(self, split: Split) -> Recommender:
        """Learn from ``split``'s training prefixes only."""

    @abstractmethod
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores ``[len(histories), n_items + 1]`` for internal-id histories; column 0 is ignored."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:  # noqa: B027 (stateless default)
        """Models without learned state ignore it."""

    # -- shared -------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        if self.item_ids is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")
        return len(self.item_ids) - 1

    def _remember_items(self, split: Split) -> None:
        self.item_ids = np.asarray(split.dataset.item_ids, dtype=object)
        self.titles = split.dataset.titles()

    def to_internal(self, external: Sequence[str]) -> np.ndarray:
        if getattr(self, "_index_for", None) is not self.item_ids:
            self._index = {str(e): i for i, e in enumerate(self.item_ids) if i} if self.n_items else {}
            self._index_for = self.item_ids
        index = self._index
        unknown = [str(e) for e in external if str(e) not in index]
        if unknown:
            raise KeyError(f"unknown item ids: {', '.join(unknown)}")
        return np.asarray([index[str(e)] for e in external], dtype=np.int64)

    @torch.no_grad()
    def recommend(
        self, histories: Sequence[Sequence[str]], k: int = 10, exclude_seen: bool = True
    ) -> list[list[dict[str, Any]]]:
        """Top-``k`` items per history, as ``{"item_id", "score", "title"}`` dicts, best first."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        internal = [self.to_internal(h) for h in histories]
        return self.top_items(self.score(internal), internal, [k] * len(internal), [exclude_seen] * len(internal))

    def top_items(
        self,
        scores: torch.Tensor,
        internal: Sequence[np.ndarray],
        ks: Sequence[int],
        exclude_seen: Sequence[bool],
    ) -> list[list[dict[str, Any]]]:
        """Rank score rows (padding never, a row's history only when not excluded) into ``{"item_id", "score",
        "title"}`` dicts, best first, ``ks[row]`` per row: the one ranking step of ``recommend`` and batched serving."""
        scores = scores.float().clone()
        scores[:, 0] = -torch.inf
        for row, (h, excl) in enumerate(zip(internal, exclude_seen, strict=True)):
            if excl:
                scores[row, torch.as_tensor(h, dtype=torch.long)] = -torch.inf
        titles = self.titles or []
        out: list[list[dict[str, Any]]] = [[] for _ in internal]
        for k in sorted(set(ks)):  # one top-k per distinct k (usually one)
            rows = [r for r, kr in enumerate(ks) if kr == k]
            top = torch.topk(scores[rows], min(k, self.n_items), dim=1)
            for r, vals, idx in zip(rows, top.values.tolist(), top.indices.tolist(), strict=True):
                out[r] = [
                    {"item_id": str(self.item_ids[i]), "score": v, "title": titles[i] if i < len(titles) else ""}
                    for v, i in zip(vals, idx, strict=True)
                    if v > -np.inf
                ]
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.item_ids is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        from padrec.utils import atomic_torch_save

        atomic_torch_save(self.state_dict(), path / "model.pt")
        atomic_write_text(
            path / "items.json",
            json.dumps({"item_ids": [str(i) for i in self.item_ids], "titles": self.titles}),
        )
        atomic_write_text(path / "config.json", json.dumps({"model": self.name, **self.config}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load any saved recommender; dispatches on ``config.json``'s ``model`` field."""
        path = Path(path)
        if not (path / "config.json").is_file():
            hint = " (a PAD run keeps its model in pad/)" if (path / "pad" / "config.json").is_file() else ""
            raise FileNotFoundError(f"{path} is not a saved padrec run (no config.json){hint}")
        cfg = _read_json(path / "config.json")
        if not isinstance(cfg, dict) or "model" not in cfg:
            raise ValueError(f"{path / 'config.json'}: expected a JSON object with a 'model' field")
        klass = get_model_class(cfg.pop("model"))
        try:
            model = klass(**cfg)
        except TypeError as e:  # a config.json written by another version, or edited by hand
            raise ValueError(f"{path / 'config.json'}: does not fit model {klass.name!r} ({e})") from None
        items = _read_json(path / "items.json")
        if not isinstance(items, dict) or "item_ids" not in items:
            raise ValueError(f"{path / 'items.json'}: expected a JSON object with an 'item_ids' list")
        model.item_ids = np.asarray(items["item_ids"], dtype=object)
        model.titles = items.get("titles")
        model._build()
        state = _read_state(path / "model.pt")
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{path / 'model.pt'}: weights do not match config.json ({first})") from None
        net = getattr(model, "net", None)
        if isinstance(net, torch.nn.Module):
            net.eval()  # loaded models serve: eval mode once, so score() never toggles it
        return model

    def _build(self) -> None:  # noqa: B027 (nothing to build by default)
        """Create modules once ``item_ids`` is known (used by ``load``)."""
