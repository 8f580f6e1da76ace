"""PAD's networks: the text adapter, the aligned tower (stage 2) and the gated triple experts (stage 3).

Every expert is an (item table, sequence encoder) pair, so any padrec backbone plugs in. Text vectors
are a fixed buffer (the language model ran offline, once per item): serving needs only the item
tables and three encoder passes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from padrec.models.layers import ItemTable
from padrec.models.sequential import SeqNet

EXPERTS = ("collab", "aligned", "text")  # the reference triple
#: every expert stage 3 can mix; ``similarity`` is padrec's optional training-free text expert
ALL_EXPERTS = (*EXPERTS, "similarity")
#: the experts a calibrated blend above 1 may move towards, first present wins (PADNet.text_side)
TEXT_SIDE = ("similarity", "text")


class TextAdapter(nn.Module):
    """g(t): Linear(D→d) + GELU, then ``n_layers`` × [Dropout, Linear(d→d), GELU] (no PCA, as in PAD)."""

    def __init__(self, text_dim: int, d: int, n_layers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(text_dim, d), nn.GELU()]
        for _ in range(n_layers):
            layers += [nn.Dropout(dropout), nn.Linear(d, d), nn.GELU()]
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(t)


def _text_rows(text: torch.Tensor, rows: int) -> torch.Tensor:
    """Pad the text table with zero rows (e.g. BERT4Rec's mask token) and zero the padding row."""
    out = torch.zeros(rows, text.size(1), dtype=torch.float32)
    n = min(rows, text.size(0))
    out[:n] = text[:n].float()
    out[0] = 0
    return out


def _encode(expert: Any, seqs: torch.Tensor, table: torch.Tensor | None, last: bool) -> torch.Tensor:
    """The expert's encoder over ``table``'s rows: ``[B, L, d]``, or only the last position ``[B, d]``."""
    table = expert.all_vectors() if table is None else table
    x = F.embedding(seqs, table)
    return expert.encoder.last(x, seqs == 0) if last else expert.encoder(x, seqs == 0)


class _Expert(nn.Module):
    """An (item table, sequence encoder) pair over the backbone's item ids (same size, same mask token)."""

    def __init__(self, backbone: SeqNet) -> None:
        super().__init__()
        self.n_items, self.bidirectional, self.mask_id = backbone.n_items, backbone.bidirectional, backbone.mask_id


class AlignedNet(_Expert):
    """Stage 2 tower: h_i = GELU(W [e_i ; g(t_i)] + b) with a copy of the backbone's table and encoder."""

    def __init__(
        self,
        backbone: SeqNet,
        text: torch.Tensor,
        adapter_layers: int,
        dropout: float,
        freeze_copy: bool = False,
    ) -> None:
        super().__init__(backbone)
        self.items = copy.deepcopy(backbone.items)
        self.encoder = copy.deepcopy(backbone.encoder)
        if freeze_copy:
            for p in (*self.items.parameters(), *self.encoder.parameters()):
                p.requires_grad_(False)
        rows, d = self.items.all().shape
        self.register_buffer("text", _text_rows(text, rows))
        self.adapter = TextAdapter(text.size(1), d, adapter_layers, dropout)
        self.fuse = nn.Linear(2 * d, d)

    def all_vectors(self) -> torch.Tensor:
        h = F.gelu(self.fuse(torch.cat([self.items.all(), self.adapter(self.text)], dim=-1)))
        return torch.cat([torch.zeros_like(h[:1]), h[1:]])  # padding stays zero

    def item_vectors(self) -> torch.Tensor:
        return self.all_vectors()[: self.n_items + 1]

    def encode(self, seqs: torch.Tensor, table: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        return _encode(self, seqs, table, last)

    def user_vectors(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.encode(seqs, last=True)


class TextNet(_Expert):
    """Text-only expert: a fresh adapter over the text buffer and a fresh encoder of the backbone's kind."""

    def __init__(self, backbone: SeqNet, text: torch.Tensor, adapter_layers: int, dropout: float) -> None:
        super().__init__(backbone)
        rows, d = backbone.items.all().shape
        fresh = copy.deepcopy(backbone.encoder)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters") and m is not fresh:
                m.reset_parameters()
        self.encoder = fresh
        self.register_buffer("text", _text_rows(text, rows))
        self.adapter = TextAdapter(text.size(1), d, adapter_layers, dropout)
        self.mask_vec = nn.Parameter(torch.zeros(d))

    def all_vectors(self) -> torch.Tensor:
        v = self.adapter(self.text)
        v = torch.cat([torch.zeros_like(v[:1]), v[1:]])
        if self.bidirectional:  # the mask token has no text: it gets a learned vector
            v = torch.cat([v[: self.mask_id], self.mask_vec[None], v[self.mask_id + 1 :]])
        return v

    def item_vectors(self) -> torch.Tensor:
        return self.all_vectors()[: self.n_items + 1]

    def encode(self, seqs: torch.Tensor, table: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        return _encode(self, seqs, table, last)


class CollabNet(_Expert):
    """Collaborative expert: the pre-trained id table and encoder, with the ``encode(seqs, table)`` API."""

    def __init__(self, backbone: SeqNet) -> None:
        super().__init__(backbone)
        self.items: ItemTable = copy.deepcopy(backbone.items)
        self.encoder = copy.deepcopy(backbone.encoder)

    def all_vectors(self) -> torch.Tensor:
        return self.items.all()

    def encode(self, seqs: torch.Tensor, table: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        return _encode(self, seqs, table, last)


def last_items(seqs: torch.Tensor, mask_id: int | None = None) -> torch.Tensor:
    """``[B, L]`` -> the most recent real item at or before each position (0 where there is none).

    Padding (0) and BERT4Rec's mask token are not items: a masked position looks back to the item before it.
    """
    real = seqs > 0
    if mask_id is not None:
        real &= seqs != mask_id
    pos = torch.arange(seqs.size(1), device=seqs.device).expand_as(seqs)
    idx = torch.where(real, pos, torch.full_like(pos, -1)).cummax(dim=1).values
    return torch.where(idx >= 0, seqs.gather(1, idx.clamp(min=0)), torch.zeros_like(seqs))


class SimilarityNet(_Expert):
    """Training-free text expert: s(u,i) = scale · cos(t_last(u), t_i), the title similarity of each item to
    the user's most recent one.

    Why: a text tower trained with cross-entropy over all items learns which kinds of title are popular
    and ranks cold items last (amazon-beauty: cold NDCG@10 0.0006), while plain similarity to the last
    item ranks them well (0.042, above SASRec's 0.026). Only the scale (and the gates) are learned, so
    the signal cannot be trained away; a new item is scored from its text alone.
    """

    def __init__(self, backbone: SeqNet, text: torch.Tensor, scale: float = 10.0) -> None:
        super().__init__(backbone)
        rows, _ = backbone.items.all().shape
        self.register_buffer("text", _text_rows(text, rows))
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log())

    def all_vectors(self) -> torch.Tensor:
        return F.normalize(self.text, dim=-1)  # the text table's zero rows (padding, mask token) stay zero

    def encode(self, seqs: torch.Tensor, table: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        table = self.all_vectors() if table is None else table
        items = last_items(seqs, self.mask_id if self.bidirectional else None)
        return self.log_scale.exp() * F.embedding(items[:, -1] if last else items, table)


def gate_init(n_bins: int) -> dict[str, torch.Tensor]:
    """Reference initialisation: collaborative leads on popular bins, text on cold, aligned starts small.

    The similarity expert (not in the reference) starts like the text expert.
    """
    return {
        "collab": torch.linspace(1.0, 0.0, n_bins),
        "aligned": torch.linspace(-4.0, -5.0, n_bins),
        "text": torch.linspace(0.0, 1.0, n_bins),
        "similarity": torch.linspace(0.0, 1.0, n_bins),
    }


class PADNet(nn.Module):
    """Triple experts mixed per item-popularity bin: s(u,i) = Σ_k w_k(bin(i)) ⟨user_k(u), item_k(i)⟩."""

    def __init__(
        self,
        experts: dict[str, nn.Module],
        item_bins: torch.Tensor,
        n_bins: int,
        learn_gates: bool = True,
        frozen: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.names = tuple(experts)
        self.frozen = tuple(frozen)
        for name in self.frozen:  # kept exactly as loaded: no gradient, no dropout
            experts[name].requires_grad_(False)
        first = next(iter(experts.values()))
        self.n_items, self.bidirectional, self.mask_id = first.n_items, first.bidirectional, first.mask_id
        self.experts = nn.ModuleDict(experts)
        init = gate_init(n_bins)
        self.gates = nn.Parameter(torch.stack([init[k] for k in self.names]), requires_grad=learn_gates)
        self.register_buffer("item_bins", item_bins.long().clone())
        # per-item place between the collaborative expert alone (0), the gated mixture (1) and the text-side expert
        # alone (2): 1 everywhere unless calibrated on validation users (padrec.pad.calibrate); added items keep 1
        self.register_buffer("item_blend", torch.ones(item_bins.numel()))
        self._serving: tuple[list[torch.Tensor], torch.Tensor] | None = None

    # -- serving cache: item tables (and the gate-weighted fused table) depend only on weights --------
    def invalidate(self) -> None:
        """Forget the cached serving tables (called when weights, texts or the catalogue change)."""
        self._serving = None

    def train(self, mode: bool = True) -> PADNet:
        self.invalidate()
        super().train(mode)
        for name in self.frozen:
            self.experts[name].eval()
        return self

    def load_state_dict(self, *args, **kwargs):
        self.invalidate()
        return super().load_state_dict(*args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # runs saved before calibration existed have no item_blend: theirs is the plain mixture (all ones)
        state_dict.setdefault(prefix + "item_blend", torch.ones_like(self.item_blend))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def text_side(self) -> str | None:
        """The expert a blend above 1 moves towards: the similarity expert, else the text expert (None: neither)."""
        return next((k for k in TEXT_SIDE if k in self.names), None)

    def set_blend(self, per_bin: Sequence[float] | torch.Tensor) -> None:
        """Set every item's mixture share from its gate bin's value (``[n_bins]``): 0 = the collaborative expert
        alone, 1 = the learned mixture, 2 = the text-side expert alone (:meth:`text_side`); values between mix the
        two ends linearly."""
        if "collab" not in self.names:
            raise ValueError(f"blending falls back to the collaborative expert, which is not in {list(self.names)}")
        per_bin = torch.as_tensor(per_bin, dtype=self.item_blend.dtype)
        top = 2.0 if self.text_side() else 1.0
        if per_bin.shape != (self.gates.shape[1],) or not bool(((per_bin >= 0) & (per_bin <= top)).all()):
            raise ValueError(f"expected {self.gates.shape[1]} blend values in [0, {top:g}], got {per_bin.tolist()}")
        with torch.inference_mode(False):  # a normal tensor even when called under inference mode: loads copy into it
            self.item_blend = per_bin.clone()[self.item_bins.clone()]
        self.invalidate()

    def serving_tables(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-expert item tables and ``[n_items + 1, n_experts * d]`` = concat_k w_k(bin(i)) · item_k(i),
        computed once in eval mode: the fused score is then one matmul with the concatenated user vectors.
        """
        if self._serving is None:
            with torch.no_grad():
                tables = [t.detach() for t in self.tables()]
                n = self.n_items + 1
                w = self.item_weights()
                fused = torch.cat([w[k, :, None] * t[:n] for k, t in enumerate(tables)], dim=1)
            self._serving = (tables, fused)
        return self._serving

    @contextmanager
    def only(self, expert: str) -> Iterator[None]:
        """Score with one expert alone (its gate weight 1, the others 0): how good is each expert by itself?"""
        k = self.names.index(expert)
        saved, blend = self.gates.data.clone(), self.item_blend.clone()
        self.gates.data.fill_(-1e4)
        self.gates.data[k] = 1e4
        self.item_blend.fill_(1.0)
        self.invalidate()
        try:
            yield
        finally:
            self.gates.data.copy_(saved)
            self.item_blend.copy_(blend)
            self.invalidate()

    def gate_weights(self) -> torch.Tensor:
        """``[n_experts, n_bins]``: sum-normalised sigmoids of the gate logits."""
        s = torch.sigmoid(self.gates)
        return s / s.sum(0, keepdim=True)

    def item_weights(self) -> torch.Tensor:
        """``[n_experts, n_items + 1]`` gate weight of each expert for each item (after any calibrated blend)."""
        w = self.gate_weights()[:, self.item_bins]
        if "collab" not in self.names or bool((self.item_blend == 1).all()):
            return w
        t = self.item_blend
        alone = torch.zeros_like(w)
        alone[self.names.index("collab")] = 1.0
        out = t * w + (1 - t) * alone
        side = self.text_side()
        if side is not None and bool((t > 1).any()):
            text = torch.zeros_like(w)
            text[self.names.index(side)] = 1.0
            out = torch.where(t > 1, (2 - t) * w + (t - 1) * text, out)
        return out

    def tables(self) -> list[torch.Tensor]:
        return [self.experts[k].all_vectors() for k in self.names]

    def hidden(
        self, seqs: torch.Tensor, tables: Sequence[torch.Tensor] | None = None, last: bool = False
    ) -> list[torch.Tensor]:
        """Each expert's encoder outputs ``[B, L, d]``; with ``last``, only the next-item query ``[B, d]``."""
        tables = self.tables() if tables is None else tables
        return [self.experts[k].encode(seqs, t, last) for k, t in zip(self.names, tables, strict=True)]

    def expert_logits(self, hidden: Sequence[torch.Tensor], tables: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each expert's scores against every item: ``n_experts`` × ``[N, n_items + 1]``."""
        n = self.n_items + 1
        return [h @ t[:n].T for h, t in zip(hidden, tables, strict=True)]

    def mix(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Gated sum of per-expert scores: s(u,i) = Σ_k w_k(bin(i)) · part_k(u,i)."""
        w = self.item_weights()
        return sum(w[k] * part for k, part in enumerate(parts))

    def fused_scores(self, hidden: Sequence[torch.Tensor], tables: Sequence[torch.Tensor]) -> torch.Tensor:
        """Gated sum of the experts' scores against every item: ``[N, n_items + 1]``."""
        return self.mix(self.expert_logits(hidden, tables))

    def expert_scores(self, seqs: torch.Tensor) -> list[torch.Tensor]:
        tables = self.tables()
        return self.expert_logits(self.hidden(seqs, tables, last=True), tables)

    def score(self, seqs: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            tables = self.tables()
            return self.fused_scores(self.hidden(seqs, tables, last=True), tables)
        tables, fused = self.serving_tables()
        return torch.cat(self.hidden(seqs, tables, last=True), dim=1) @ fused.T
