"""MK-MMD and friends: zero for one distribution, positive for shifted ones, equal to NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from padrec.pad.losses import DEFAULT_ALPHAS, info_nce, mmd


def _numpy_mkmmd(x: np.ndarray, y: np.ndarray, alphas=DEFAULT_ALPHAS) -> float:
    z = np.concatenate([x, y])
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    n = len(z)
    base = d2.sum() / (n * n - n)
    k = sum(np.exp(-d2 / (2 * a * base)) for a in alphas)
    m = len(x)
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / ((n - m) * (n - m - 1))
    return float(xx + yy - 2 * kxy.mean())


def test_mkmmd_matches_direct_numpy_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(1.0, 2.0, size=(5, 3))
    got = mmd(torch.tensor(x), torch.tensor(y)).item()
    assert got == pytest.approx(_numpy_mkmmd(x, y), rel=1e-9)


def test_mkmmd_near_zero_for_one_distribution_and_positive_when_shifted():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    same = mmd(a, b).item()
    shifted = mmd(a, b + 1.0).item()
    assert abs(same) < 0.02
    assert shifted > 0.3 and shifted > 20 * abs(same)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "linear", "cosine"])
def test_every_kernel_gives_finite_gradients(kernel):
    x = torch.randn(16, 4, requires_grad=True)
    y = torch.randn(16, 4) + 0.5
    loss = mmd(x, y, kernel=kernel)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_single_gaussian_and_infonce():
    x, y = torch.randn(32, 4), torch.randn(32, 4)
    assert mmd(x, x.clone(), alphas=(1.0,)).item() < mmd(x, y + 2, alphas=(1.0,)).item()
    # InfoNCE is lowest when rows are paired with themselves
    assert info_nce(x, x).item() < info_nce(x, y).item()


def test_mmd_needs_two_samples():
    with pytest.raises(ValueError, match="two samples"):
        mmd(torch.randn(1, 3), torch.randn(4, 3))
