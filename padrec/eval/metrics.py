"""Ranking metrics for one held-out target per user.

Everything reduces to the 0-based rank of the target among the items it competes with, so the
metric functions are pure functions of that rank and the protocol-specific part (full ranking with
the history masked, or a sampled candidate list) lives only in how the rank is computed.

Ties are **pessimistic**: the target is ranked after every competing item with an equal score. A
model that returns a constant (or a coarse, heavily tied) score therefore gets no credit for ties,
and results never depend on the order items happen to be stored in. A ``NaN`` target score gets the
worst rank for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
#: metric families reported at every cut-off ``k``
METRIC_NAMES: tuple[str, ...] = ("HR", "NDCG", "MRR", "Recall")


def _as_index(x: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a.astype(np.int64, copy=False)


def _as_numpy(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(scores, np.ndarray):
        return scores
    s = scores.detach()
    if s.dtype in (torch.bfloat16, torch.float16):
        s = s.float()  # exact conversion: ties stay ties
    return s.numpy()


def flat_indices(shape: tuple[int, int], exclude: Sequence[np.ndarray]) -> np.ndarray:
    """Positions ``row * C + item`` of every excluded item in a row-major ``[B, C]`` matrix."""
    if len(exclude) != shape[0]:
        raise ValueError(f"exclude has {len(exclude)} rows, scores have {shape[0]}")
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=len(exclude))
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])
    if cols.min() < 0 or cols.max() >= shape[1]:
        raise ValueError(f"exclude holds item ids outside 0..{shape[1] - 1}")
    return np.repeat(np.arange(shape[0], dtype=np.int64) * shape[1], lengths) + cols


def target_ranks(
    scores: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    exclude: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """0-based rank of each row's target among all real items (full ranking), ``int64 [B]``.

    ``scores`` is ``[B, n_items + 1]``; column 0 is padding and never ranks. Items listed in
    ``exclude[b]`` (the user's history) are treated as −inf, i.e. never ranked above the target,
    **except the target itself**: re-consuming an item is a legitimate prediction and stays
    rankable. Ties are pessimistic (see the module docstring). ``scores`` is never modified: the
    mask is applied to the boolean "scores at least the target's" matrix, with one scatter.
    CPU scores are ranked with NumPy (several times faster than torch's boolean reductions here).
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, n_items + 1], got shape {tuple(scores.shape)}")
    b, c = scores.shape
    t = _as_index(targets)
    if t.shape != (b,):
        raise ValueError(f"expected {b} targets, got shape {tuple(t.shape)}")
    if b and (t.min() < 1 or t.max() >= c):
        raise ValueError(f"targets must be item ids in 1..{c - 1}")
    flat = flat_indices((b, c), exclude) if exclude is not None else np.zeros(0, dtype=np.int64)
    if isinstance(scores, torch.Tensor) and scores.device.type != "cpu":
        return _target_ranks_torch(scores, t, flat)
    s = _as_numpy(scores)
    rows = np.arange(b)
    ts = s[rows, t]
    # a fresh C-ordered array (whatever the layout of the scores): masking it leaves them alone
    ahead = np.greater_equal(s, ts[:, None], order="C")
    ahead.reshape(-1)[flat] = False
    ahead[rows, t] = False
    ahead[:, 0] = False
    r = ahead.view(np.uint8).sum(1, dtype=np.int64)
    return np.where(np.isnan(ts), c - 2, r) if ts.dtype.kind == "f" else r


def _target_ranks_torch(scores: torch.Tensor, t: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """:func:`target_ranks` on the scores' own device (GPU scores never leave it); same semantics."""
    b, c = scores.shape
    dev = scores.device
    tt = torch.from_numpy(t).to(dev)
    rows = torch.arange(b, device=dev)
    ts = scores[rows, tt].unsqueeze(1)
    ahead = (scores >= ts).contiguous()  # view(-1) below needs a row-major layout
    ahead.view(-1)[torch.from_numpy(flat).to(dev)] = False
    ahead[rows, tt] = False  # the target does not rank ahead of itself
    ahead[:, 0] = False
    r = ahead.sum(1)
    r = torch.where(ts.squeeze(1).isnan(), torch.full_like(r, c - 2), r)
    return r.cpu().numpy().astype(np.int64)


def sampled_ranks(
    scores: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    negatives: torch.Tensor | np.ndarray,
) -> np.ndarray:
    """0-based rank of each row's target among itself and its ``negatives[b]`` (sampled protocol).

    Only the ``1 + n`` candidate columns are read from the full score matrix. Negatives are
    assumed to exclude the user's own items (they are drawn that way), so nothing is masked.
    Ties are pessimistic; a NaN target ranks last.
    """
    b = scores.shape[0]
    t = _as_index(targets)
    neg = _as_index(negatives)
    if neg.ndim != 2 or neg.shape[0] != b or t.shape != (b,):
        raise ValueError(f"expected targets [{b}] and negatives [{b}, n], got {t.shape} and {neg.shape}")
    if isinstance(scores, torch.Tensor):
        dev = scores.device
        cand = torch.from_numpy(np.concatenate([t[:, None], neg], axis=1)).to(dev)
        s = _as_numpy(scores.gather(1, cand).cpu())
    else:
        s = np.take_along_axis(scores, np.concatenate([t[:, None], neg], axis=1), axis=1)
    ts = s[:, :1]
    r = (s[:, 1:] >= ts).sum(1, dtype=np.int64)
    return np.where(np.isnan(ts[:, 0]), neg.shape[1], r) if s.dtype.kind == "f" else r


def ndcg_per_user(ranks: np.ndarray, k: int) -> np.ndarray:
    """Each user's NDCG@k from a 0-based target rank: ``1/log2(rank+2)`` inside the top ``k``, else 0 (one target,
    so the ideal DCG is 1). Kept per user for paired comparisons (bootstrap over users)."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def metrics_from_ranks(
    ranks: torch.Tensor | np.ndarray | Sequence[int], ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean HR@k, NDCG@k, MRR@k and Recall@k over users, from 0-based target ranks.

    With one target per user ``HR@k = Recall@k`` (both kept because papers report either),
    ``NDCG@k = 1/log2(rank+2)`` when ``rank < k`` (the ideal DCG is 1) and ``MRR@k = 1/(rank+1)``.
    A ``k`` larger than the catalogue is fine: every user then counts as a hit. An empty rank
    array gives NaN (undefined, not zero).
    """
    r = ranks.detach().cpu().numpy() if isinstance(ranks, torch.Tensor) else np.asarray(ranks)
    r = r.astype(np.float64).ravel()
    out: dict[str, float] = {}
    ks = sorted({int(k) for k in ks})
    if any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be >= 1, got {ks}")
    per_k: dict[int, tuple[float, float, float]] = {}
    for k in ks:
        if len(r) == 0:
            per_k[k] = (math.nan, math.nan, math.nan)
            continue
        hit = r < k
        per_k[k] = (
            float(hit.mean()),
            float(ndcg_per_user(r, k).mean()),
            float(np.where(hit, 1.0 / (r + 1.0), 0.0).mean()),
        )
    # grouped by family (HR@5, HR@10, ..., NDCG@5, ...) so tables and JSON read naturally
    for fam, j in (("HR", 0), ("NDCG", 1), ("MRR", 2), ("Recall", 0)):
        for k in ks:
            out[f"{fam}@{k}"] = per_k[k][j]
    return out
