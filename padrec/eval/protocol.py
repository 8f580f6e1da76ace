"""How a model is evaluated, as one validated value whose name goes into every result.

Full and sampled numbers can differ by an order of magnitude, so a result without its protocol
name is not comparable to anything; :meth:`Protocol.name` is that name.
"""

from __future__ import annotations

from typing import Literal

import pydantic


class Protocol(pydantic.BaseModel, extra="forbid"):
    """Full ranking over all items (default) or ranking among sampled negatives.

    ``n_negatives``, ``sampler`` and ``seed`` only matter for ``kind="sampled"``: negatives are
    drawn once per (split, stage) with ``seed`` and stored, so every model sees the same ones.
    ``batch_size`` is the number of users scored per ``model.score`` call; it trades memory
    (``batch_size × n_items`` scores) for speed and never changes the numbers.
    """

    kind: Literal["full", "sampled"] = "full"
    n_negatives: int = pydantic.Field(default=100, ge=1)
    sampler: Literal["uniform", "popularity"] = "uniform"
    seed: int = 0
    ks: tuple[int, ...] = (5, 10, 20)
    batch_size: int = pydantic.Field(default=1024, ge=1)

    @pydantic.field_validator("ks")
    @classmethod
    def _check_ks(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if not ks or any(k < 1 for k in ks):
            raise ValueError(f"ks must be a non-empty tuple of positive cut-offs, got {ks}")
        return tuple(sorted(set(ks)))

    def name(self, split_kind: str = "loo") -> str:
        """``"full-loo"``, ``"sampled100-uniform-loo"``, ``"full-time"``, ..."""
        if self.kind == "full":
            return f"full-{split_kind}"
        return f"sampled{self.n_negatives}-{self.sampler}-{split_kind}"
