"""Alignment losses between text-derived and collaborative item vectors (PAD stage 2).

MK-MMD with Gaussian kernels is PAD's choice: Gaussian kernels are characteristic, so the
discrepancy is zero only when the two distributions match, whereas cosine or InfoNCE alignment
only pulls paired points together. The other kernels and InfoNCE are kept for ablations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch.nn import functional as F

Kernel = Literal["gaussian", "laplacian", "linear", "cosine"]
DEFAULT_ALPHAS: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0)


def _kernel_matrices(
    x: torch.Tensor, y: torch.Tensor, kernel: Kernel, alphas: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K(x,x), K(y,y), K(x,y) summed over the kernel family."""
    if kernel in ("linear", "cosine"):
        if kernel == "cosine":
            x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        return x @ x.T, y @ y.T, x @ y.T
    z = torch.cat([x, y])
    sq = torch.cdist(z, z).pow(2) if kernel == "gaussian" else torch.cdist(z, z)
    n = z.size(0)
    # bandwidth from the batch's mean pairwise (squared) distance, detached as in the reference
    base = (sq.sum() / (n * n - n)).detach().clamp_min(1e-12)
    k = torch.zeros_like(sq)
    for a in alphas:
        width = a * base
        k = k + (torch.exp(-sq / (2 * width)) if kernel == "gaussian" else torch.exp(-sq / width))
    m = x.size(0)
    return k[:m, :m], k[m:, m:], k[:m, m:]


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: Kernel = "gaussian",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> torch.Tensor:
    """Unbiased MMD² between samples ``x [m, d]`` and ``y [n, d]`` (m, n ≥ 2).

    ``kernel="gaussian"`` with the default ``alphas`` is PAD's MK-MMD: five Gaussian kernels with
    σ² = α · mean pairwise squared distance, equal weights. A single Gaussian is ``alphas=(1.0,)``.
    """
    if x.size(0) < 2 or y.size(0) < 2:
        raise ValueError("MMD needs at least two samples on each side")
    kxx, kyy, kxy = _kernel_matrices(x, y, kernel, alphas)
    m, n = x.size(0), y.size(0)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2 * kxy.mean()


def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE over paired rows of ``x`` and ``y`` (row i of each is the same item)."""
    logits = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T / temperature
    target = torch.arange(x.size(0), device=x.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def alignment_loss(
    text: torch.Tensor,
    collab: torch.Tensor,
    kind: Literal["mmd", "infonce"] = "mmd",
    kernel: Kernel = "gaussian",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    temperature: float = 0.1,
) -> torch.Tensor:
    if kind == "mmd":
        return mmd(text, collab, kernel, alphas)
    if kind == "infonce":
        return info_nce(text, collab, temperature)
    raise ValueError(f"unknown alignment {kind!r}: expected 'mmd' or 'infonce'")
