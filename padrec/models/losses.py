"""Recommendation losses over hidden states and an item table.

Cross-entropy over all items is the default: at 3k-12k items it is cheap and it beats BCE with
one negative by a wide margin (Klenitskiy & Vasilev, RecSys 2023). BCE with sampled negatives
is kept for fidelity with the original papers (SASRec, Caser, NCF), BPR for BPR-MF, sampled softmax
for very large catalogues.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

LossKind = Literal["ce", "bce", "bpr", "sampled_softmax"]
SAMPLED: tuple[str, ...] = ("bce", "bpr", "sampled_softmax")


def sample_negatives(
    n_rows: int, shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Uniform item ids in ``[1, n_rows)``: row 0 of an item table is padding, never a negative."""
    return torch.randint(1, n_rows, shape, generator=generator, device=device)


def sampled_loss(pos: torch.Tensor, neg: torch.Tensor, kind: str, collide: torch.Tensor | None = None) -> torch.Tensor:
    """Loss from positive logits ``[N]`` and negative logits ``[N, K]`` (``kind`` in :data:`SAMPLED`).

    ``collide [N, K]`` marks negatives that equal the positive: sampled softmax drops them (a target must
    not be its own competitor); BCE and BPR keep them, as their papers do.
    """
    if kind == "bce":  # one positive and K negatives per row, each a binary decision
        return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(
            neg, torch.zeros_like(neg)
        ) * neg.size(1)
    if kind == "bpr":  # the positive must outscore each negative
        return -F.logsigmoid(pos[:, None] - neg).mean()
    if kind == "sampled_softmax":
        if collide is not None:
            neg = neg.masked_fill(collide, torch.finfo(neg.dtype).min)
        logits = torch.cat([pos[:, None], neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))
    raise ValueError(f"unknown loss {kind!r}: expected one of 'ce', {', '.join(map(repr, SAMPLED))}")


def rec_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    items: torch.Tensor,
    kind: LossKind = "ce",
    n_negatives: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean loss of predicting ``targets [N]`` from ``hidden [N, d]`` against ``items [n+1, d]``.

    Row 0 of ``items`` is padding: it is never a valid prediction or negative. BCE and BPR draw
    ``n_negatives`` per row; sampled softmax shares ``n_negatives`` across the batch.
    """
    n_rows = items.size(0)
    if kind == "ce":
        logits = hidden @ items.T
        logits[:, 0] = torch.finfo(logits.dtype).min
        return F.cross_entropy(logits, targets)
    pos = (hidden * items[targets]).sum(-1)
    if kind == "sampled_softmax":
        negs = sample_negatives(n_rows, (n_negatives,), generator, hidden.device)
        return sampled_loss(pos, hidden @ items[negs].T, kind, negs[None, :] == targets[:, None])
    negs = sample_negatives(n_rows, (hidden.size(0), n_negatives), generator, hidden.device)
    # an unknown kind raises in sampled_loss
    return sampled_loss(pos, torch.einsum("nd,nkd->nk", hidden, items[negs]), kind)


def logits_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    kind: LossKind = "ce",
    n_negatives: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean loss from scores against every item, ``logits [N, n_rows]`` (column 0 padding, never a candidate):
    for models whose scores are not one hidden state times an item table (PAD's gated mixture). The sampled kinds
    read the columns of uniform negatives drawn as :func:`rec_loss` draws them."""
    if kind == "ce":
        return F.cross_entropy(logits[:, 1:], targets - 1)
    n_rows = logits.size(1)
    pos = logits.gather(1, targets[:, None]).squeeze(1)
    if kind == "sampled_softmax":
        negs = sample_negatives(n_rows, (n_negatives,), generator, logits.device)
        return sampled_loss(pos, logits[:, negs], kind, negs[None, :] == targets[:, None])
    negs = sample_negatives(n_rows, (logits.size(0), n_negatives), generator, logits.device)
    return sampled_loss(pos, logits.gather(1, negs), kind)
