"""Item tables and sequence encoders: the two halves every sequential model is made of.

An encoder maps left-padded item vectors ``x [B, L, d]`` (``pad [B, L]`` True at padding) to
one output per position ``[B, L, d]``; position ``t`` summarises the items up to ``t``
(bidirectional BERT4Rec excepted), so the last position is the user's next-item query.
PAD builds its three experts from independent (ItemTable, encoder) pairs of these classes.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ItemTable(nn.Module):
    """Learned id embeddings; row 0 is padding and stays zero."""

    def __init__(self, n_rows: int, d: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_rows, d, padding_idx=0)
        nn.init.normal_(self.emb.weight, std=d**-0.5)
        with torch.no_grad():
            self.emb.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)

    def all(self) -> torch.Tensor:
        return self.emb.weight


def _attention_mask(pad: torch.Tensor, n_heads: int, causal: bool) -> torch.Tensor:
    """Boolean mask ``[B*H, L, L]`` (True = blocked): padding keys, plus the future when causal.

    A padding query may always see itself so no row is fully blocked (that would give NaN).
    """
    b, length = pad.shape
    blocked = pad[:, None, :].expand(b, length, length)
    if causal:
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=pad.device), 1)
        blocked = blocked | future
    eye = torch.eye(length, dtype=torch.bool, device=pad.device)
    blocked = blocked & ~eye
    return blocked.repeat_interleave(n_heads, dim=0)


class TransformerEncoder(nn.Module):
    """Pre-norm Transformer with learned positions aligned to the most recent item.

    ``causal=True`` is SASRec; ``causal=False`` is BERT4Rec's bidirectional encoder.
    """

    def __init__(
        self,
        d: int,
        n_layers: int = 2,
        n_heads: int = 1,
        max_len: int = 200,
        dropout: float = 0.2,
        causal: bool = True,
        ffn_mult: int = 1,
    ) -> None:
        super().__init__()
        self.d, self.n_heads, self.causal, self.max_len = d, n_heads, causal, max_len
        self.pos = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d,
            n_heads,
            dim_feedforward=d * ffn_mult,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def _inputs(self, x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = x.size(1)
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        x = x * math.sqrt(self.d) + self.pos.weight[self.max_len - length :]
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return self.drop(x) * keep, keep

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x, keep = self._inputs(x, pad)
        h = self.blocks(x, mask=_attention_mask(pad, self.n_heads, self.causal))
        return self.norm(h) * keep

    def last(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``forward(x, pad)[:, -1]`` (the next-item query) without the last layer's other positions.

        Ranking needs one output per user, and in the last layer only that position's query matters: its
        attention still reads every position's keys and values, but the other positions' attention and
        feed-forward are skipped (about a third of the work with two layers; the serving and evaluation path).
        """
        x, keep = self._inputs(x, pad)
        *first, final = self.blocks.layers
        if first:
            mask = _attention_mask(pad, self.n_heads, self.causal)
            for layer in first:
                x = layer(x, src_mask=mask)
        # the last position sees every real position (and itself: all-padding rows stay defined, as in forward)
        blocked = pad.clone()
        blocked[:, -1] = False
        mask = blocked[:, None, :].repeat_interleave(self.n_heads, dim=0)
        h = final.norm1(x)
        q = h[:, -1:]
        attended = final.self_attn(q, h, h, attn_mask=mask, need_weights=False)[0]
        y = x[:, -1:] + final.dropout1(attended)
        y = y + final._ff_block(final.norm2(y))
        return (self.norm(y) * keep[:, -1:])[:, 0]


class _LastFromForward:
    """``last`` for encoders whose cost does not shrink when only the last position is wanted."""

    def last(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self(x, pad)[:, -1]


class GRUEncoder(_LastFromForward, nn.Module):
    """GRU4Rec: a GRU over the real items only (left padding is packed away)."""

    def __init__(self, d: int, n_layers: int = 1, dropout: float = 0.2, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or d
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(d, hidden, n_layers, batch_first=True)
        self.out = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        lengths = (~pad).sum(1)
        # left-padded -> right-padded so the GRU starts at each user's first real item
        shift = (length - lengths)[:, None]
        idx = (torch.arange(length, device=x.device)[None, :] + shift) % length
        right = torch.gather(self.drop(x), 1, idx[..., None].expand_as(x))
        packed = nn.utils.rnn.pack_padded_sequence(
            right, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)
        back = (torch.arange(length, device=x.device)[None, :] - shift) % length
        h = torch.gather(out, 1, back[..., None].expand(b, length, out.size(-1)))
        return self.out(h) * (~pad).unsqueeze(-1).to(h.dtype)


class CaserEncoder(_LastFromForward, nn.Module):
    """Caser: horizontal and vertical convolutions over the last ``window`` items at each position.

    The original adds a per-user embedding; padrec's encoders see histories only, so that term
    is left out (it also lets Caser score users it never saw).
    """

    def __init__(self, d: int, window: int = 5, n_h: int = 16, n_v: int = 4, dropout: float = 0.5) -> None:
        super().__init__()
        self.window = window
        self.horizontal = nn.ModuleList(nn.Conv2d(1, n_h, (h, d)) for h in range(1, window + 1))
        self.vertical = nn.Conv2d(1, n_v, (window, 1))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(n_h * window + n_v * d, d)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        padded = F.pad(x, (0, 0, self.window - 1, 0))
        win = padded.unfold(1, self.window, 1).permute(0, 1, 3, 2)  # [B, L, window, d]
        win = win.reshape(b * length, 1, self.window, d)
        v = self.vertical(win).reshape(b * length, -1)
        hs = []
        for conv in self.horizontal:
            c = F.relu(conv(win).squeeze(-1))  # [N, n_h, window-h+1]
            hs.append(c.max(dim=2).values)
        z = torch.cat([v, *hs], dim=1)
        h = F.relu(self.fc(self.drop(z))).reshape(b, length, d)
        return h * (~pad).unsqueeze(-1).to(h.dtype)
