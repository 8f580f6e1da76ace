"""Do two item spaces agree? k-NN overlap and pair-similarity rank correlation (PAD's concordance analysis).

PAD argues that after alignment, items close in the collaborative (id) space are also close in the
text space. :func:`concordance` measures that for any two row-aligned tables of item vectors, so PAD
can call it before and after alignment; :func:`run_concordance` does it for a saved run against text
embeddings, and :func:`plot_concordance` draws the figure.

Similarity is cosine. For each query item, its k nearest neighbours (itself excluded) are found in
both spaces; ``overlap_at_k`` is the mean fraction shared (1.0 = same neighbourhoods; two unrelated
spaces give about ``k / (n - 1)``, reported as ``overlap_random``). ``spearman`` is the rank
correlation of the two cosine similarities over random item pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from padrec.text.encoders import MINILM, Encoder, Pooling
from padrec.utils import atomic_path


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)  # zero rows stay zero: similarity 0 to everything


def _knn(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = x[queries] @ x.T
    sims[np.arange(len(queries)), queries] = -np.inf
    return np.argpartition(-sims, k - 1, axis=1)[:, :k]


def _ranks(x: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.Series(x).rank(method="average").to_numpy()


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def concordance(
    a: np.ndarray,
    b: np.ndarray,
    k: int = 10,
    sample: int | None = 2000,
    pairs: int = 100_000,
    seed: int = 0,
    details: bool = False,
    chunk: int = 1024,
) -> dict[str, Any]:
    """Agreement of two row-aligned item spaces ``a`` [n, da] and ``b`` [n, db] (pure, deterministic).

    ``sample`` query items (all when None or >= n) and ``pairs`` random item pairs, drawn with ``seed``.
    Returns scalars; with ``details=True`` also ``overlap_per_query``, ``pair_sim_a``, ``pair_sim_b``
    (NumPy arrays, for plots).
    """
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(f"concordance needs two row-aligned 2-d tables, got shapes {a.shape} and {b.shape}")
    n = len(a)
    if not 1 <= k < n:
        raise ValueError(f"k={k} must be between 1 and n_items - 1 = {n - 1}")
    rng = np.random.default_rng(seed)
    an, bn = _normalise(a), _normalise(b)
    queries = np.arange(n) if sample is None or sample >= n else np.sort(rng.choice(n, size=sample, replace=False))
    overlap = np.empty(len(queries), dtype=np.float64)
    cross = np.empty(len(queries), dtype=np.float64)
    for lo in range(0, len(queries), chunk):
        q = queries[lo : lo + chunk]
        na, nb = _knn(an, q, k), _knn(bn, q, k)
        overlap[lo : lo + chunk] = (na[:, :, None] == nb[:, None, :]).any(2).sum(1) / k
        cross[lo : lo + chunk] = np.einsum("qd,qkd->qk", bn[q], bn[na]).mean(1)  # a's neighbours, seen from b
    i = rng.integers(0, n, size=pairs)
    j = (i + rng.integers(1, n, size=pairs)) % n  # j != i
    sim_a = np.einsum("pd,pd->p", an[i], an[j])
    sim_b = np.einsum("pd,pd->p", bn[i], bn[j])
    out: dict[str, Any] = {
        "k": k,
        "n_items": n,
        "n_queries": len(queries),
        "n_pairs": pairs,
        "seed": seed,
        "overlap_at_k": float(overlap.mean()),
        "overlap_at_k_median": float(np.median(overlap)),
        "overlap_random": k / (n - 1),
        "overlap_lift": float(overlap.mean() / (k / (n - 1))),
        "spearman": _corr(_ranks(sim_a), _ranks(sim_b)),
        "pearson": _corr(sim_a.astype(np.float64), sim_b.astype(np.float64)),
        "cosine_b_of_a_neighbours": float(cross.mean()),
        "cosine_b_random_pairs": float(sim_b.mean()),
    }
    if details:
        out.update(overlap_per_query=overlap, pair_sim_a=sim_a, pair_sim_b=sim_b)
    return out


def scalars(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe part of a :func:`concordance` result (drops the per-item arrays)."""
    return {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}


def plot_concordance(
    result: dict[str, Any], out: str | Path, labels: tuple[str, str] = ("collaborative", "text"), title: str = ""
) -> Path:
    """PNG: histogram of overlap@k per item, and pair similarities in both spaces (needs ``details=True``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "overlap_per_query" not in result:
        raise ValueError("plot_concordance needs concordance(..., details=True)")
    k = result["k"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.hist(result["overlap_per_query"], bins=(np.arange(k + 2) - 0.5) / k, color="tab:blue")
    ax1.axvline(result["overlap_at_k"], color="k", label=f"mean {result['overlap_at_k']:.3f}")
    ax1.axvline(result["overlap_random"], color="tab:red", ls="--", label=f"random {result['overlap_random']:.4f}")
    ax1.set(xlabel=f"overlap@{k} of nearest neighbours", ylabel="items", title="k-NN agreement per item")
    ax1.legend()
    sa, sb = result["pair_sim_a"], result["pair_sim_b"]
    show = np.random.default_rng(0).permutation(len(sa))[:20_000]
    ax2.hexbin(sa[show], sb[show], gridsize=50, bins="log", cmap="viridis", mincnt=1)
    ax2.set(
        xlabel=f"cosine, {labels[0]} space",
        ylabel=f"cosine, {labels[1]} space",
        title=f"random item pairs: Spearman {result['spearman']:.3f}",
    )
    if title:
        fig.suptitle(title)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out


def _dataset_name(run: Path) -> str | None:
    ref = run / "dataset.json"
    if ref.is_file():
        return json.loads(ref.read_text()).get("dataset")
    cfg = run / "config.yaml"
    if cfg.is_file():
        import yaml

        return (yaml.safe_load(cfg.read_text()) or {}).get("dataset")
    return None


def run_item_vectors(run: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(external item ids, item vectors) of a saved run, padding row dropped."""
    from padrec.models import Recommender

    rec = Recommender.load(run)
    net = getattr(rec, "net", None)
    table = getattr(net, "item_vectors", None)
    if table is None:
        raise ValueError(f"run {run} ({rec.name}) has no item table (.net.item_vectors()) to compare")
    vectors = table().detach().float().cpu().numpy()
    ids = np.asarray(rec.item_ids, dtype=object)
    return ids[1 : len(vectors)], vectors[1 : len(ids)]


def run_concordance(
    run: str | Path,
    encoder: str | Path | Encoder = MINILM,
    *,
    dataset: Any = None,
    data_dir: str | Path | None = None,
    template: str | None = None,
    pooling: Pooling = "mean",
    k: int = 10,
    sample: int | None = 2000,
    pairs: int = 100_000,
    items: str = "train",
    seed: int = 0,
    out: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Concordance of a run's item table with text embeddings of the same items.

    ``dataset``: a name/path or a :class:`SeqDataset` (default: the run's ``dataset.json``/``config.yaml``).
    ``items="train"`` keeps items seen in the leave-one-out training split (untrained rows of an id
    table are noise); ``"all"`` keeps every item. ``out``: write the PNG there.
    """
    from padrec.data.dataset import SeqDataset
    from padrec.text.embed import embed_items

    run = Path(run)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run} is not a saved run (no config.json)")
    if items not in ("train", "all"):
        raise ValueError(f"items must be 'train' or 'all', not {items!r}")
    if not isinstance(dataset, SeqDataset):
        from padrec.data.registry import load_dataset

        name = dataset or _dataset_name(run)
        if not name:
            raise ValueError(f"{run}: no dataset.json or config.yaml names the dataset: pass --dataset")
        dataset = load_dataset(name, data_dir)
    ids, collab = run_item_vectors(run)
    try:
        internal = dataset.to_internal(ids)
    except KeyError as e:
        raise ValueError(f"run {run} was not trained on dataset {dataset.name!r}: {e.args[0][:300]}") from None
    emb = embed_items(dataset, encoder, template, pooling=pooling, batch_size=batch_size, progress=progress)
    text = emb.vectors[internal]
    keep = np.ones(len(ids), dtype=bool)
    if items == "train":
        from padrec.data.split import leave_one_out

        keep = leave_one_out(dataset).train_item_counts[internal] > 0
    res = concordance(collab[keep], text[keep], k=k, sample=sample, pairs=pairs, seed=seed, details=True)
    meta = {
        "run": str(run),
        "dataset": dataset.name,
        "encoder": emb.manifest.get("encoder"),
        "template": emb.manifest.get("template"),
        "items": items,
        "embeddings": str(emb.path),
        "plot": None,
    }
    if out is not None:
        meta["plot"] = str(plot_concordance(res, out, title=f"{dataset.name}: {run.name} vs {meta['encoder']} (k={k})"))
    return {**meta, **res}
