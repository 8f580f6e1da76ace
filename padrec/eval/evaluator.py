"""Run a recommender under a :class:`Protocol` on a :class:`Split`: the only place metrics are made.

Full ranking scores every item for a batch of users with a single ``model.score`` call, masks the
batch's histories with one scatter and ranks by comparison with the target's score (no sort), so
the cost is one score matrix plus a few passes over it. The sampled protocol reads the target and
its stored negatives from that same matrix. Per-user ranks are then reduced overall and per group
(target popularity bin, user history length), so groups cost nothing extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from padrec.data.split import COUNT_EDGES, COUNT_GROUPS, Split, Stage, bin_name, length_group
from padrec.eval.metrics import metrics_from_ranks, sampled_ranks, target_ranks
from padrec.eval.negatives import load_or_draw_negatives
from padrec.eval.protocol import Protocol
from padrec.eval.results import Results

#: number of popularity bins ``Split.popularity_bins`` cuts items into
N_BINS = 10
#: popularity bins (of 10) reported together as "cold" items; the rest (1-7) are "warm"
COLD_BINS: tuple[int, ...] = (8, 9, 10)
#: most scores one batch may hold (users × items): with a 1e6-item catalogue a batch is 67 users (256 MB of
#: float32 scores), never users × items; small catalogues keep ``Protocol.batch_size``
SCORE_BUDGET = 1 << 26


def _added_items(model: Any, item_ids: np.ndarray) -> int:
    """How many items ``model`` holds beyond the dataset's, when its first ids are exactly the dataset's."""
    ids = getattr(model, "item_ids", None)
    if ids is None or len(ids) <= len(item_ids):
        return 0
    same = np.array_equal(np.asarray(ids[: len(item_ids)], dtype=object), np.asarray(item_ids, dtype=object))
    return len(ids) - len(item_ids) if same else 0


def model_label(model: Any) -> str:
    """A model's display name: its ``label`` (e.g. ``pop-leak``), else its registry name."""
    return str(getattr(model, "label", None) or getattr(model, "name", "") or type(model).__name__)


class Evaluator:
    """Evaluates any number of models on one split under one protocol.

    Negatives (sampled protocol) are loaded or drawn once per stage and reused for every model.
    """

    def __init__(self, split: Split, protocol: Protocol | None = None, cache_root: str | Path | None = None) -> None:
        self.split = split
        self.protocol = protocol if protocol is not None else Protocol()
        self.cache_root = cache_root
        self._negatives: dict[str, np.ndarray] = {}

    @property
    def protocol_name(self) -> str:
        return self.protocol.name(self.split.kind)

    def negatives(self, stage: Stage = "test") -> np.ndarray:
        """The stored negatives of ``stage`` (``[n_users, n_negatives]``, aligned with its users)."""
        if stage not in self._negatives:
            p = self.protocol
            self._negatives[stage] = load_or_draw_negatives(
                self.split, stage, p.n_negatives, p.sampler, p.seed, self.cache_root
            )
        return self._negatives[stage]

    def ranks(self, model: Any, stage: Stage = "test", subset: np.ndarray | None = None) -> np.ndarray:
        """0-based target rank of every user of ``stage`` (aligned with ``split.users(stage)``).

        ``subset`` (positions into ``split.users(stage)``) ranks only those users, in that order.
        """
        _check_stage(stage)
        split = self.split
        users, targets = split.users(stage), split.targets(stage)
        if subset is not None:
            users, targets = users[subset], targets[subset]
        histories = split.histories(stage, users)
        negs = self.negatives(stage) if self.protocol.kind == "sampled" else None
        if negs is not None and subset is not None:
            negs = negs[subset]
        by_user = bool(getattr(model, "uses_user_ids", False))
        width = split.n_items + 1
        extra = _added_items(model, split.dataset.item_ids)
        out = np.empty(len(users), dtype=np.int64)
        bs = max(1, min(self.protocol.batch_size, SCORE_BUDGET // width))
        with torch.inference_mode():
            for lo in range(0, len(users), bs):
                hi = min(lo + bs, len(users))
                hist = histories[lo:hi]
                scores = model.score(hist, users=users[lo:hi]) if by_user else model.score(hist)
                if not isinstance(scores, torch.Tensor):
                    scores = torch.as_tensor(np.asarray(scores))
                if extra:  # items added after training are not in this dataset: rank its catalogue only
                    scores = scores[:, :width]
                if tuple(scores.shape) != (hi - lo, width):
                    raise ValueError(
                        f"{model_label(model)}.score returned shape {tuple(scores.shape)}, "
                        f"expected ({hi - lo}, {width}) = (histories, n_items + 1)"
                    )
                t = targets[lo:hi]
                if negs is None:
                    out[lo:hi] = target_ranks(scores, t, hist)
                else:
                    out[lo:hi] = sampled_ranks(scores, t, negs[lo:hi])
        return out

    def run(self, model: Any, stage: Stage = "test", groups: bool = True) -> Results:
        """Evaluate ``model`` on every user of ``stage``; ``groups=False`` skips the group breakdown."""
        ranks = self.ranks(model, stage)
        if len(ranks) == 0:
            hint = " (leave-one-out needs users with 3 or more interactions)" if self.split.kind == "loo" else ""
            raise ValueError(
                f"dataset {self.split.dataset.name!r}: no users with a {stage} target in split "
                f"{self.split.kind!r}, nothing to evaluate{hint}"
            )
        ks = self.protocol.ks
        return Results(
            protocol=self.protocol_name,
            dataset=self.split.dataset.name,
            model=model_label(model),
            stage=stage,
            n_users=len(ranks),
            overall=metrics_from_ranks(ranks, ks),
            groups=self.grouped(ranks, stage) if groups else {},
        )

    def group_labels(self, stage: Stage = "test") -> dict[str, np.ndarray]:
        """Boolean user masks per group name, in report order; each family partitions the users."""
        split = self.split
        users, targets = split.users(stage), split.targets(stage)
        out: dict[str, np.ndarray] = {}
        bins = split.popularity_bins[targets]
        for b in range(1, N_BINS + 2):  # bin N_BINS + 1 = items never seen in training
            out[bin_name(b, N_BINS)] = bins == b
        cold = np.isin(bins, [*COLD_BINS, N_BINS + 1])
        out["warm"] = ~cold
        out["cold"] = cold
        freq = np.searchsorted(np.asarray(COUNT_EDGES), split.train_item_counts[targets])  # group index per user
        for k, name in enumerate(COUNT_GROUPS):
            out[name] = freq == k
        end = split.valid_hist_end if stage == "valid" else split.test_hist_end
        lengths = end[users] - split.dataset.offsets[users]
        uniq, inverse = np.unique(lengths, return_inverse=True)
        names = np.asarray([length_group(int(n)) for n in uniq], dtype=object)[inverse]
        for name in _length_order({str(n) for n in names}):
            out[name] = names == name
        return out

    def grouped(self, ranks: np.ndarray, stage: Stage = "test") -> dict[str, dict[str, float]]:
        """Metrics per non-empty group, each with its ``users`` count."""
        out: dict[str, dict[str, float]] = {}
        for name, mask in self.group_labels(stage).items():
            n = int(mask.sum())
            if n:
                out[name] = {"users": n, **metrics_from_ranks(ranks[mask], self.protocol.ks)}
        return out


def _check_stage(stage: str) -> None:
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")


def _length_order(names: Sequence[str] | set[str]) -> list[str]:
    def key(name: str) -> int:
        rest = name[3:]
        return int(rest[1:]) + 1 if rest.startswith(">") else int(rest.split("-")[0])

    return sorted(names, key=key)
