"""Non-learned reference points: popularity and random scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from padrec.data.split import Split
from padrec.models.base import Recommender, register


@register("pop")
class Pop(Recommender):
    """Scores every item by its number of training interactions.

    ``count_test=True`` counts all interactions, validation and test targets included. That
    leaks the targets into the model, but it is how the S3Rec paper's Pop row was computed;
    it exists so users can see where that published number comes from, never as a baseline.
    """

    def __init__(self, count_test: bool = False) -> None:
        super().__init__(count_test=count_test)
        self.counts = torch.zeros(1)

    @property
    def label(self) -> str:
        return "pop-leak" if self.config["count_test"] else "pop"

    def fit(self, split: Split) -> Pop:
        self._remember_items(split)
        counts = split.dataset.item_counts() if self.config["count_test"] else split.train_item_counts
        self.counts = torch.as_tensor(counts, dtype=torch.float32)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self.counts.expand(len(histories), -1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.counts = state["counts"]


@register("random")
class RandomRec(Recommender):
    """Uniform random scores, seeded per call so repeated evaluations agree."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed=seed)

    def fit(self, split: Split) -> RandomRec:
        self._remember_items(split)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.config["seed"] + sum(len(h) for h in histories))
        return torch.rand(len(histories), self.n_items + 1, generator=gen)
