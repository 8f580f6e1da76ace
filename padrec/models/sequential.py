"""Sequential recommenders: an :class:`ItemTable` plus a sequence encoder, one class per paper.

``SeqNet`` is the torch module (item table + encoder); ``SequentialRecommender`` is the public
facade (``fit``/``score``/``recommend``/``save``/``load``). Training lives in
:mod:`padrec.train.trainer` so models stay plain ``nn.Module``s that PAD can reuse.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from padrec.data.split import Split
from padrec.models.base import Recommender, evaluating, register
from padrec.models.layers import CaserEncoder, GRUEncoder, ItemTable, TransformerEncoder
from padrec.models.losses import rec_loss
from padrec.train.config import Strict, TrainConfig

log = logging.getLogger(__name__)


#: the share of training histories that fit whole in a data-derived ``max_len`` (see :func:`auto_max_len`)
MAX_LEN_PERCENTILE = 99.0


class SASRecConfig(Strict):
    d: int = 64
    n_layers: int = 2
    n_heads: int = 1
    # None: derived from the training histories at fit time (auto_max_len), at most MAX_LEN_CAP; the saved
    # config holds the resolved number, so a loaded model never needs the data
    max_len: int | None = Field(default=None, ge=1)
    dropout: float = 0.2
    MAX_LEN_CAP: ClassVar[int] = 200  # the fixed default before max_len was derived from the data


class BERT4RecConfig(SASRecConfig):
    n_heads: int = 2
    mask_prob: float = 0.2


class GRU4RecConfig(Strict):
    d: int = 64
    n_layers: int = 1
    max_len: int | None = Field(default=None, ge=1)
    dropout: float = 0.2
    MAX_LEN_CAP: ClassVar[int] = 50


class CaserConfig(Strict):
    d: int = 64
    window: int = 5
    n_h: int = 16
    n_v: int = 4
    max_len: int | None = Field(default=None, ge=1)
    dropout: float = 0.5
    MAX_LEN_CAP: ClassVar[int] = 50


def auto_max_len(lengths: np.ndarray, cap: int, percentile: float = MAX_LEN_PERCENTILE, multiple: int = 8) -> int:
    """The smallest multiple of ``multiple`` covering the ``percentile``-th training history length, at most ``cap``.

    Why the 99th: with batches cropped to their longest row, a generous ``max_len`` costs only in the few
    batches that hold long histories, while a short one drops the oldest items of the most active users, who
    hold a large share of the training targets (amazon-beauty: 95th -> 24 keeps 91.5% of the next-item
    targets, 99th -> 48 keeps 97.2%; ml-1m's 99th is far above the cap, so it keeps 200)."""
    lengths = np.asarray(lengths)
    lengths = lengths[lengths > 0]
    if len(lengths) == 0:
        return cap
    p = float(np.percentile(lengths, percentile))
    return int(min(cap, max(multiple, multiple * math.ceil(p / multiple))))


def pad_left(seqs: Sequence[np.ndarray], length: int, fill: int = 0) -> np.ndarray:
    """Keep each sequence's last ``length`` items, left-padded with ``fill`` (0 = padding)."""
    out = np.full((len(seqs), length), fill, dtype=np.int64)
    for row, s in enumerate(seqs):
        s = s[-length:] if length else s[:0]
        if len(s):
            out[row, length - len(s) :] = s
    return out


def query_seqs(histories: Sequence[np.ndarray], max_len: int, bidirectional: bool, mask_id: int) -> torch.Tensor:
    """Model input that asks for the next item: BERT4Rec-style models get a trailing mask token."""
    if bidirectional:
        return torch.from_numpy(pad_left([np.append(h[-(max_len - 1) :], mask_id) for h in histories], max_len))
    return torch.from_numpy(pad_left(histories, max_len))


class SeqNet(nn.Module):
    """Item table + encoder; ``user_vectors`` is the query for the next item."""

    def __init__(self, kind: str, n_items: int, cfg: Strict) -> None:
        super().__init__()
        self.kind, self.n_items = kind, n_items
        self.bidirectional = kind == "bert4rec"
        self.mask_id = n_items + 1
        self.items = ItemTable(n_items + 1 + int(self.bidirectional), cfg.d)
        if kind in ("sasrec", "bert4rec"):
            self.encoder: nn.Module = TransformerEncoder(
                cfg.d, cfg.n_layers, cfg.n_heads, cfg.max_len, cfg.dropout, causal=not self.bidirectional
            )
        elif kind == "gru4rec":
            self.encoder = GRUEncoder(cfg.d, cfg.n_layers, cfg.dropout)
        elif kind == "caser":
            self.encoder = CaserEncoder(cfg.d, cfg.window, cfg.n_h, cfg.n_v, cfg.dropout)
        else:
            raise ValueError(f"unknown sequential model kind {kind!r}")

    def item_vectors(self) -> torch.Tensor:
        return self.items.all()[: self.n_items + 1]

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.items(seqs), seqs == 0)

    def user_vectors(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.encoder.last(self.items(seqs), seqs == 0)


class SequentialRecommender(Recommender):
    """Shared facade for SASRec, BERT4Rec, GRU4Rec and Caser."""

    config_cls: ClassVar[type[Strict]] = SASRecConfig

    def __init__(self, params: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> None:
        p = self.config_cls(**(params or {}))
        t = TrainConfig(**(train or {}))
        super().__init__(params=p.model_dump(), train=t.model_dump())
        self.params, self.train_cfg = p, t
        self.net: SeqNet | None = None

    def _build(self) -> None:
        if self.params.max_len is None:  # built without data to derive it from: the model's longest default
            self._set_max_len(self.params.MAX_LEN_CAP)
        torch.manual_seed(self.train_cfg.seed)
        self.net = SeqNet(self.name, self.n_items, self.params)

    @property
    def max_len(self) -> int | None:
        """Positions the model reads; None until ``fit`` derives it from the data (when no config set it)."""
        return self.params.max_len

    def _set_max_len(self, n: int) -> None:
        self.params = self.params.model_copy(update={"max_len": int(n)})
        self.config["params"]["max_len"] = int(n)  # saved resolved: load and serving never need the data

    def resolve_max_len(self, split: Split) -> int:
        """Fix an unset ``max_len`` from ``split``'s training histories (:func:`auto_max_len`); a set one stays."""
        if self.params.max_len is None:
            n = auto_max_len(np.diff(split.train_offsets), self.params.MAX_LEN_CAP)
            self._set_max_len(n)
            log.info(
                "%s: max_len %d from the training histories (%gth percentile, cap %d)",
                self.name,
                n,
                MAX_LEN_PERCENTILE,
                self.params.MAX_LEN_CAP,
            )
        return self.params.max_len

    def _resume_max_len(self, run_dir: Path) -> None:
        """A resumed run keeps the ``max_len`` its checkpoints were trained with (the data or defaults may differ)."""
        import yaml

        path = run_dir / "config.yaml"
        if path.is_file():
            saved = (yaml.safe_load(path.read_text()) or {}).get("params", {}).get("max_len")
            if isinstance(saved, int):
                self._set_max_len(saved)

    def fit(self, split: Split, run_dir: str | Path | None = None, resume: bool = False) -> SequentialRecommender:
        from padrec.train.trainer import train

        self._remember_items(split)
        if resume and self.params.max_len is None and run_dir is not None:
            self._resume_max_len(Path(run_dir))
        self.resolve_max_len(split)
        if self.net is None or self.net.n_items != self.n_items:
            self._build()
        train(self, split, run_dir=run_dir, resume=resume)
        return self

    def train_loader(self, split: Split) -> Any:
        from padrec.train.trainer import sequence_loader

        return sequence_loader(self, split)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Loss over every non-padding target position of a batch."""
        inp, tgt = batch
        hidden = self.net.encode(inp)
        keep = tgt > 0
        cfg = self.train_cfg
        loss = rec_loss(hidden[keep], tgt[keep], self.net.item_vectors(), cfg.loss, cfg.n_negatives)
        return loss, int(keep.sum())

    @property
    def mask_prob(self) -> float:
        return getattr(self.params, "mask_prob", 0.2)

    def query_batch(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Left-padded model input for scoring the item after each history."""
        assert self.net is not None
        return query_seqs(histories, self.max_len, self.net.bidirectional, self.net.mask_id)

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")
        with evaluating(self.net):
            device = next(self.net.parameters()).device
            users = self.net.user_vectors(self.query_batch(histories).to(device))
            scores = users @ self.net.item_vectors().T
        return scores.float().cpu()

    def state_dict(self) -> dict[str, torch.Tensor]:
        assert self.net is not None
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        assert self.net is not None
        self.net.load_state_dict(state)


@register("sasrec")
class SASRec(SequentialRecommender):
    """Self-attentive sequential recommendation (Kang & McAuley, ICDM 2018): causal Transformer."""

    config_cls = SASRecConfig


@register("bert4rec")
class BERT4Rec(SequentialRecommender):
    """BERT4Rec (Sun et al., CIKM 2019): bidirectional Transformer trained by masked-item prediction."""

    config_cls = BERT4RecConfig


@register("gru4rec")
class GRU4Rec(SequentialRecommender):
    """GRU4Rec (Hidasi et al., ICLR 2016) in its sequence-to-sequence, full-softmax form."""

    config_cls = GRU4RecConfig


@register("caser")
class Caser(SequentialRecommender):
    """Caser (Tang & Wang, WSDM 2018): convolutions over the most recent items."""

    config_cls = CaserConfig
