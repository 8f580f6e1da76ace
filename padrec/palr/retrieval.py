"""Stage 2 of PALR: any padrec recommender narrows the catalogue to the top-N candidates.

The retriever is a trained run directory (``padrec train``; SASRec is the reference) or the name of
an untrained model that is fitted on the training prefixes here (``pop``, ``random``). The user's own
history is masked before the top-N is taken, as in the full-ranking protocol.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from padrec.data.dataset import SeqDataset
from padrec.data.split import Split, Stage
from padrec.models.base import Recommender, get_model_class


def load_retriever(spec: str | Path, split: Split) -> Recommender:
    """A run directory (loaded) or an untrained model name (fitted on ``split``); item ids must match."""
    path = Path(spec)
    if (path / "config.json").is_file():
        rec = Recommender.load(path)
        _check_catalogue(path, rec.item_ids, split.dataset)
        return rec
    check_retriever(spec)
    cls = get_model_class(str(spec))
    if hasattr(cls, "config_cls"):
        raise ValueError(_untrained(spec))
    rec = cls()
    rec.fit(split)
    return rec


def check_retriever(spec: str | Path, dataset: SeqDataset | None = None) -> None:
    """Fail fast, before a language model loads, on a retriever that is neither a saved run nor a model name,
    or (with ``dataset``) a run trained on other items than ``dataset``'s (its scores would index wrong items)."""
    path = Path(spec)
    if (path / "config.json").is_file():
        if dataset is not None:
            items = path / "items.json"
            try:
                ids = json.loads(items.read_text(encoding="utf-8"))["item_ids"]
            except (OSError, ValueError, KeyError, TypeError):
                raise ValueError(f"retriever {path}: {items} is missing or unreadable (not a padrec run?)") from None
            _check_catalogue(path, ids, dataset)
        return
    if path.exists() or "/" in str(spec) or str(spec).startswith("."):
        raise FileNotFoundError(f"retriever run directory {path} not found (or has no config.json)")
    cls = get_model_class(str(spec))
    if dataset is not None and hasattr(cls, "config_cls"):
        raise ValueError(_untrained(spec))


def _untrained(spec: str | Path) -> str:
    return (
        f"retriever {spec!r} must be trained first (padrec train --model {spec} --dataset ...), "
        "then pass its run directory; or use an untrained retriever such as 'pop'"
    )


def _check_catalogue(path: Path, item_ids: Sequence[Any] | None, dataset: SeqDataset) -> None:
    ids = [] if item_ids is None else [str(i) for i in item_ids]
    if ids == [str(i) for i in dataset.item_ids]:
        return
    trained_on = "another dataset"
    for ref in (path / "dataset.json", path.parent / "dataset.json"):  # a PAD stage's is in its parent
        try:
            trained_on = repr(json.loads(ref.read_text(encoding="utf-8"))["name"])
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    raise ValueError(
        f"retriever {path} was trained on {trained_on} ({max(len(ids) - 1, 0):,} items), not on the dataset PALR "
        f"runs on, {dataset.name!r} ({dataset.n_items:,} items): pass --retriever a run trained on it "
        f"(padrec train --model sasrec --dataset ...) or an untrained model name such as 'pop'"
    )


def retriever_scores(
    rec: Recommender, histories: Sequence[np.ndarray], users: np.ndarray | None = None
) -> torch.Tensor:
    """``float32 [B, n_items + 1]`` scores of any recommender (user ids passed when it uses them)."""
    with torch.inference_mode():
        if getattr(rec, "uses_user_ids", False) and users is not None:
            s = rec.score(histories, users=users)
        else:
            s = rec.score(histories)
    s = s if isinstance(s, torch.Tensor) else torch.as_tensor(np.asarray(s))
    return s.detach().float().cpu().clone()


def top_candidates(scores: torch.Tensor, histories: Sequence[np.ndarray], n: int) -> np.ndarray:
    """``int64 [B, n]`` best items per row, best first, with padding and the history masked (ties: lower id)."""
    s = scores.clone()
    s[:, 0] = -torch.inf
    for row, h in enumerate(histories):
        if len(h):
            s[row, torch.as_tensor(np.asarray(h), dtype=torch.long)] = -torch.inf
    n = min(n, s.shape[1] - 1)
    # stable: sort by (-score, id) so equal scores (Pop) give a deterministic order
    order = torch.sort(-s, dim=1, stable=True).indices[:, :n]
    return order.numpy().astype(np.int64)


def sample_users(split: Split, max_users: int | None, seed: int = 0, stage: Stage = "test") -> Split:
    """The split restricted to a seeded uniform sample of ``max_users`` users of ``stage`` (both stages).

    Training prefixes are untouched (popularity bins etc. stay the same); only the evaluated users shrink.
    ``None`` or a number at least the user count returns ``split`` itself.
    """
    users = split.users(stage)
    if max_users is None or max_users >= len(users):
        return split
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(users, size=max_users, replace=False))
    vmask = np.isin(split.valid_users, keep)
    tmask = np.isin(split.test_users, keep)
    return dataclasses.replace(
        split,
        valid_users=split.valid_users[vmask],
        valid_targets=split.valid_targets[vmask],
        test_users=split.test_users[tmask],
        test_targets=split.test_targets[tmask],
    )


def candidate_recall(
    rec: Recommender, split: Split, n: int, stage: Stage = "test", batch_size: int = 512
) -> dict[str, float]:
    """The retriever's Recall@n over ``split``'s users of ``stage`` (the target among its top-n candidates)."""
    users, targets = split.users(stage), split.targets(stage)
    hist = split.histories(stage, users)
    hits = 0
    for lo in range(0, len(users), batch_size):
        hi = min(lo + batch_size, len(users))
        cand = top_candidates(retriever_scores(rec, hist[lo:hi], users[lo:hi]), hist[lo:hi], n)
        hits += int((cand == targets[lo:hi, None]).any(1).sum())
    return {f"Recall@{n}": hits / max(len(users), 1), "users": len(users)}
