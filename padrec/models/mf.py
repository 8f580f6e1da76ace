"""Non-sequential baselines: BPR-MF and NCF (NeuMF), with a history fold-in for unseen users.

Both learn a user embedding per training user. ``score(histories, users=...)`` uses it when the
evaluator passes internal user ids; a bare history (the public ``recommend``) is folded in by
averaging the history's item vectors, so these models still answer users they never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from padrec.data.split import Split
from padrec.models.base import Recommender, evaluating, register
from padrec.models.losses import rec_loss, sample_negatives, sampled_loss
from padrec.train.config import ConfigError, Strict, TrainConfig

#: (user, item) pairs NCF scores at once in evaluation: 8 Beauty users' [items, 64] activations stay in a CPU's
#: cache; 64 users at a time was 3.5x slower per user.
SCORE_PAIRS = 1 << 17


class MFConfig(Strict):
    d: int = 64
    n_users: int = 0  # set from the data at fit time


class NCFConfig(MFConfig):
    mlp: tuple[int, ...] = (64, 32, 16)
    dropout: float = 0.1


class MFNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, d: int) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users + 1, d)  # row n_users = "unknown user"
        self.items = nn.Embedding(n_items + 1, d, padding_idx=0)
        nn.init.normal_(self.users.weight, std=0.05)
        nn.init.normal_(self.items.weight, std=0.05)

    def pair(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (self.users(u).unsqueeze(1) * self.items(i)).sum(-1)

    def all_items(self, user_vec: torch.Tensor) -> torch.Tensor:
        return user_vec @ self.items.weight.T


class NCFNet(nn.Module):
    """NeuMF: a GMF branch and an MLP branch on separate embeddings, fused by one linear layer."""

    def __init__(self, n_users: int, n_items: int, d: int, mlp: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.gmf_u, self.gmf_i = nn.Embedding(n_users + 1, d), nn.Embedding(n_items + 1, d, padding_idx=0)
        self.mlp_u, self.mlp_i = nn.Embedding(n_users + 1, d), nn.Embedding(n_items + 1, d, padding_idx=0)
        for e in (self.gmf_u, self.gmf_i, self.mlp_u, self.mlp_i):
            nn.init.normal_(e.weight, std=0.05)
        layers: list[nn.Module] = []
        width = 2 * d
        for h in mlp:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(d + width, 1)

    def score_vecs(self, gu: torch.Tensor, mu: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """``gu, mu [B, d]`` user vectors, ``i [B, K]`` items -> logits ``[B, K]``."""
        gi, mi = self.gmf_i(i), self.mlp_i(i)
        gmf = gu.unsqueeze(1) * gi
        m = self.mlp(torch.cat([mu.unsqueeze(1).expand_as(mi), mi], -1))
        return self.out(torch.cat([gmf, m], -1)).squeeze(-1)

    def pair(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return self.score_vecs(self.gmf_u(u), self.mlp_u(u), i)

    def score_all(self, gu: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits ``[B, n_items + 1]`` against every item, equal to ``score_vecs`` but several times
        cheaper: the first MLP layer is linear in [user; item], so its two halves are computed once per user and
        once per item instead of once per (user, item) pair, GMF becomes one matmul, and the [B, items, h]
        activations are rectified in place. Callers keep ``B`` small (see ``NCF.score``): the activations
        then stay in cache, which matters more than the batch size on a CPU."""
        linears = [m for m in self.mlp if isinstance(m, nn.Linear)]
        if not linears:
            items = torch.arange(self.gmf_i.num_embeddings).expand(len(gu), -1)
            return self.score_vecs(gu, mu, items)
        first, d = linears[0], mu.size(1)
        item_half = self.mlp_i.weight @ first.weight[:, d:].T
        hidden = torch.relu_((mu @ first.weight[:, :d].T + first.bias)[:, None, :] + item_half)
        for layer in linears[1:]:
            hidden = torch.relu_(F.linear(hidden, layer.weight, layer.bias))
        w = self.out.weight[0]
        gmf = gu @ (self.gmf_i.weight * w[:d]).T
        return gmf + hidden @ w[d:] + self.out.bias


class _UserItemModel(Recommender):
    """(user, item) pairs in, one training target per pair; the loss defaults to BPR (``train.loss=bpr``)."""

    config_cls: ClassVar[type[Strict]] = MFConfig
    uses_user_ids: ClassVar[bool] = True
    losses: ClassVar[tuple[str, ...]] = ("bpr", "bce", "sampled_softmax")

    def __init__(self, params: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> None:
        p = self.config_cls(**(params or {}))
        t = TrainConfig(**{"loss": "bpr", **(train or {})})
        super().__init__(params=p.model_dump(), train=t.model_dump())
        self.params, self.train_cfg = p, t
        self.net: nn.Module | None = None

    def fit(self, split: Split, run_dir: Any = None, resume: bool = False) -> _UserItemModel:
        from padrec.train.trainer import train

        if self.train_cfg.loss not in self.losses:  # checked here, not at load: old runs saved loss=ce
            raise ConfigError(
                f"train.loss={self.train_cfg.loss!r} is not available for {self.name}: "
                f"expected one of {', '.join(self.losses)}"
            )
        self._remember_items(split)
        self.params = self.params.model_copy(update={"n_users": split.dataset.n_users})
        self.config["params"] = self.params.model_dump()
        self._build()
        train(self, split, run_dir=run_dir, resume=resume)
        return self

    def train_loader(self, split: Split) -> DataLoader:
        lengths = np.diff(split.train_offsets)
        users = np.repeat(np.arange(len(lengths)), lengths)
        pairs = TensorDataset(torch.from_numpy(users), torch.from_numpy(split.train_items))
        return DataLoader(pairs, batch_size=self.train_cfg.batch_size, shuffle=True)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """``train.loss`` with ``n_negatives`` uniform negatives per pair (shared by the batch for sampled
        softmax)."""
        u, i = batch
        k = max(1, self.train_cfg.n_negatives)
        kind = self.train_cfg.loss
        shared = kind == "sampled_softmax"
        j = sample_negatives(self.n_items + 1, (k,) if shared else (len(u), k)).expand(len(u), -1)
        collide = j == i[:, None] if shared else None
        return sampled_loss(self.net.pair(u, i[:, None])[:, 0], self.net.pair(u, j), kind, collide), len(u)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)


@register("bpr")
class BPRMF(_UserItemModel):
    """BPR-MF (Rendle et al., UAI 2009): dot-product factors trained with the pairwise BPR loss."""

    config_cls = MFConfig
    losses = ("bpr", "bce", "sampled_softmax", "ce")  # dot products: CE over every item is one matmul

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Dot-product scores: the shared loss of the sequential models, with the user vector as state."""
        u, i = batch
        cfg = self.train_cfg
        return rec_loss(self.net.users(u), i, self.net.items.weight, cfg.loss, max(1, cfg.n_negatives)), len(u)

    def _build(self) -> None:
        torch.manual_seed(self.train_cfg.seed)
        self.net = MFNet(self.params.n_users, self.n_items, self.params.d)

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        net: MFNet = self.net
        if users is not None:
            vec = net.users(torch.as_tensor(np.asarray(users), dtype=torch.long))
        else:
            vec = torch.stack([net.items(torch.as_tensor(h, dtype=torch.long)).mean(0) for h in histories])
        return net.all_items(vec).float()


@register("ncf")
class NCF(_UserItemModel):
    """NCF/NeuMF (He et al., WWW 2017): GMF + MLP over user and item embeddings.

    Trained with BPR by default; ``loss=bce n_negatives=4`` is the paper's setting. Full cross-entropy
    would run the MLP on every (user, item) pair of a batch, so it is not offered."""

    config_cls = NCFConfig

    def _build(self) -> None:
        torch.manual_seed(self.train_cfg.seed)
        p = self.params
        self.net = NCFNet(p.n_users, self.n_items, p.d, p.mlp, p.dropout)

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        net: NCFNet = self.net
        with evaluating(net):
            if users is not None:
                u = torch.as_tensor(np.asarray(users), dtype=torch.long)
                gu, mu = net.gmf_u(u), net.mlp_u(u)
            else:
                gu = torch.stack([net.gmf_i(torch.as_tensor(h, dtype=torch.long)).mean(0) for h in histories])
                mu = torch.stack([net.mlp_i(torch.as_tensor(h, dtype=torch.long)).mean(0) for h in histories])
            step = max(1, SCORE_PAIRS // (self.n_items + 1))  # users per chunk: ~100k (user, item) pairs
            out = torch.cat([net.score_all(gu[b : b + step], mu[b : b + step]) for b in range(0, len(gu), step)])
        return out.float()
