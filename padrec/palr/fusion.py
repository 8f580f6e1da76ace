"""PALR + retriever score fusion: one weight, chosen on validation users, applied to stored test scores.

Per user, over that user's candidate list only::

    fused = w * z(lm) + (1 - w) * z(retriever)

``z`` standardises within the list (mean 0, standard deviation 1). The two scales are unrelated — the LM gives
log-probabilities or mean token log-likelihoods (negative, spread depends on the prompt), the retriever dot
products or counts (any range, any offset per user) — so a raw weighted sum would let whichever scale is wider
decide alone, and a weight chosen on one user would mean something else on the next. Standardising per user
makes ``w`` a share of influence comparable across users and retrievers. Ties of the fused score keep the
retriever's order, so ``w = 0`` is exactly the retriever's order and ``w = 1`` exactly pure PALR's (both break
ties by the retriever's order; ``z`` is order-preserving).

The fused order takes the candidates' place on top of the full ranking exactly as in pure PALR
(:func:`padrec.palr.rank.place_on_top`), so the metrics stay full-ranking with the history masked and comparable
with PALR's and the retriever's rows. No LM call is made here: the scores are those the ranker kept
(``PALRRanker.scores``, also stored in the ranking cache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from padrec.data.split import Split, Stage
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.models.base import Recommender
from padrec.palr.rank import place_on_top
from padrec.palr.retrieval import retriever_scores

#: the weights tried on validation users: 0.0, 0.1, ..., 1.0 (0 = the retriever alone, 1 = pure PALR)
GRID: tuple[float, ...] = tuple(i / 10 for i in range(11))


def zscores(values: Sequence[float]) -> np.ndarray:
    """Standardised ``values`` (float64; population standard deviation). Constant lists give zeros; a non-finite
    value is replaced first by one just outside the finite range (``-inf``/NaN below the lowest, ``+inf`` above the
    highest), which keeps every order, ties included."""
    x = np.asarray(values, dtype=np.float64).copy()
    fin = np.isfinite(x)
    if not fin.all():
        if not fin.any():
            return np.zeros_like(x)
        lo, hi = x[fin].min(), x[fin].max()
        span = (hi - lo) or 1.0
        x[~fin & (x > 0)] = hi + span
        x[~fin & ~(x > 0)] = lo - span  # -inf and NaN
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def fused_order(
    candidates: Sequence[int], lm_scores: Sequence[float], retriever: Sequence[float], weight: float
) -> list[int]:
    """``candidates`` (retriever order) sorted by ``weight * z(lm) + (1 - weight) * z(retriever)``, best first;
    equal fused scores keep the retriever's order."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    if not len(candidates) == len(lm_scores) == len(retriever):
        raise ValueError(
            f"fusion needs one LM and one retriever score per candidate: {len(candidates)} candidates, "
            f"{len(lm_scores)} LM scores, {len(retriever)} retriever scores"
        )
    fused = weight * zscores(lm_scores) + (1.0 - weight) * zscores(retriever)
    order = np.lexsort((np.arange(len(candidates)), -fused))
    return [int(candidates[int(i)]) for i in order]


def choose_weight(grid: Mapping[float, float]) -> float:
    """The weight with the best validation score; a tie goes to the LARGER weight (more of the LM: the fused row
    then departs from pure PALR only where validation asks for it)."""
    if not grid:
        raise ValueError("choose_weight: no weights were scored")
    return max(grid, key=lambda w: (grid[w], w))


class FusionRanker(Recommender):
    """Retriever top-N re-ordered by fused scores, laid out like :class:`~padrec.palr.rank.PALRRanker`.

    ``scores``: user → ``{"candidates", "lm", "retriever"}`` (``PALRRanker.scores``); a user without stored
    scores is an error (its LM ranking is not repeated here)."""

    name = "palr-fusion"
    uses_user_ids = True

    def __init__(
        self, retriever: Recommender, scores: Mapping[int, Mapping[str, Any]], weight: float, label: str
    ) -> None:
        super().__init__(weight=weight)
        self.retriever, self.stored, self.weight, self.label = retriever, scores, float(weight), label

    def fit(self, split: Split) -> FusionRanker:
        self._remember_items(split)
        return self

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        if users is None:
            raise ValueError("FusionRanker.score needs the user ids (its LM scores are stored per user)")
        lists, orders = [], []
        for u in users:
            rec = self.stored.get(int(u))
            if rec is None:
                raise KeyError(f"fusion: no stored LM scores for user {int(u)} (rank it with PALRRanker first)")
            lists.append([int(c) for c in rec["candidates"]])
            orders.append(fused_order(rec["candidates"], rec["lm"], rec["retriever"], self.weight))
        return place_on_top(retriever_scores(self.retriever, histories, users), lists, orders)


def weight_grid(
    split: Split,
    retriever: Recommender,
    scores: Mapping[int, Mapping[str, Any]],
    stage: Stage = "valid",
    grid: Sequence[float] = GRID,
    metric: str = "NDCG@10",
) -> dict[float, float]:
    """``metric`` of the fused ranking for every weight of ``grid`` on ``split``'s users of ``stage`` (full ranking,
    history masked), from stored scores only."""
    ev = Evaluator(split, Protocol())
    out: dict[float, float] = {}
    for w in grid:
        ranker = FusionRanker(retriever, scores, w, f"palr-fusion-w{w}").fit(split)
        out[float(w)] = float(ev.run(ranker, stage, groups=False).overall[metric])
    return out
