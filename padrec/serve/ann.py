"""Approximate top-k with faiss, for models whose score is ``user_vector · item_vector``.

Only :class:`~padrec.models.sequential.SequentialRecommender` (SASRec, BERT4Rec, GRU4Rec, Caser) is
supported: its ``score`` is exactly ``net.user_vectors(query) @ net.item_vectors().T``, so an
inner-product index over ``net.item_vectors()`` (without the padding row) ranks the same items up to
the index's approximation. PAD mixes three experts with per-item gates, which is not one dot product,
so it always uses the exact path. ``faiss-cpu`` is an optional dependency, imported on first use.
Exact scoring (``Recommender.recommend``) stays the default; the benchmark reports recall@10 vs exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from padrec.models.base import Recommender

KINDS = ("hnsw", "flat")


def supports_ann(model: Recommender) -> bool:
    from padrec.models.sequential import SequentialRecommender

    return isinstance(model, SequentialRecommender) and getattr(model, "net", None) is not None


class DotProductIndex:
    """A faiss inner-product index over a sequential model's item table (rows 1..n; row 0 is padding).

    ``hnsw`` is a graph index (sub-linear search, approximate); ``flat`` is brute force inside faiss and
    serves as a sanity check (recall 1.0 up to ties). ``threads`` sets faiss's (process-wide) OpenMP
    threads: a server searches one query per request, in parallel requests, and an OpenMP pool per search
    only competes with torch's for the same cores (None leaves faiss's default).
    """

    def __init__(
        self,
        model: Recommender,
        kind: str = "hnsw",
        hnsw_m: int = 32,
        ef_search: int = 128,
        threads: int | None = 1,
    ) -> None:
        if not supports_ann(model):
            raise ValueError(f"no approximate index for model {model.name!r}: its score is not one dot product")
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose from {', '.join(KINDS)}")
        try:
            import faiss
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("the approximate index needs faiss: pip install faiss-cpu") from e
        if threads:
            faiss.omp_set_num_threads(threads)
        with torch.inference_mode():
            items = model.net.item_vectors()[1:].detach().float().cpu().contiguous().numpy()
        d = items.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        else:
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(2 * hnsw_m, 80)
            index.hnsw.efSearch = ef_search
        index.add(np.ascontiguousarray(items))
        self.kind, self.index, self.n_items = kind, index, items.shape[0]

    @staticmethod
    def user_vectors(model: Any, histories: Sequence[np.ndarray]) -> np.ndarray:
        """The model's query vectors for internal-id histories (the left factor of its ``score``)."""
        with torch.inference_mode():
            users = model.net.user_vectors(model.query_batch(histories))
        return np.ascontiguousarray(users.float().cpu().numpy())

    def search(
        self, model: Any, histories: Sequence[np.ndarray], k: int, exclude_seen: bool = True
    ) -> list[list[tuple[int, float]]]:
        """``(internal id, score)`` pairs per history, best first, at most ``k`` (seen items dropped)."""
        k = min(k, self.n_items)
        extra = max((len(set(h.tolist())) for h in histories), default=0) if exclude_seen else 0
        fetch = min(k + extra, self.n_items)
        scores, rows = self.index.search(self.user_vectors(model, histories), fetch)
        out = []
        for h, srow, irow in zip(histories, scores, rows, strict=True):
            seen = set(h.tolist()) if exclude_seen else set()
            hits = [(int(r) + 1, float(s)) for r, s in zip(irow, srow, strict=True) if r >= 0 and r + 1 not in seen]
            out.append(hits[:k])
        return out

    def recommend(
        self, model: Recommender, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = True
    ) -> list[list[dict[str, Any]]]:
        """Same output as ``Recommender.recommend`` (``item_id``, ``score``, ``title``), ranked by the index."""
        internal = [model.to_internal(h) for h in histories]
        titles = model.titles or []
        return [
            [
                {"item_id": str(model.item_ids[i]), "score": s, "title": titles[i] if i < len(titles) else ""}
                for i, s in hits
            ]
            for hits in self.search(model, internal, k, exclude_seen)
        ]
