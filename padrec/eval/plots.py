"""Grouped-result plots: one metric per group (e.g. popularity bins), one bar per model, error bars.

Per-bin tables of 10 bins × several models are hard to read; a bar chart shows at a glance where a
model wins (popular vs cold items). matplotlib is imported only here, when a plot is asked for
(``pip install 'padrec[plot]'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from padrec.utils import atomic_path


def plot_groups(
    series: Mapping[str, Mapping[str, float]],
    out: str | Path,
    groups: Sequence[str] | None = None,
    errors: Mapping[str, Mapping[str, float]] | None = None,
    ylabel: str = "NDCG@10",
    title: str = "",
) -> Path:
    """PNG of grouped bars: ``series[model][group]`` = value, optional ``errors[model][group]`` = ±std.

    ``groups`` fixes the order on the x axis (default: the first series' keys); a group a model lacks is
    left empty rather than drawn as zero.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not series:
        raise ValueError("plot_groups needs at least one series")
    groups = list(groups) if groups is not None else list(next(iter(series.values())))
    if not groups:
        raise ValueError("plot_groups needs at least one group")
    fig = Figure(figsize=(max(6.0, 0.9 * len(groups) + 2), 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for k, (name, vals) in enumerate(series.items()):
        y = np.array([vals.get(g, np.nan) for g in groups], dtype=float)
        err = None
        if errors and name in errors:
            err = np.array([errors[name].get(g, 0.0) for g in groups], dtype=float)
        ax.bar(x + (k - (len(series) - 1) / 2) * width, y, width, yerr=err, capsize=2, label=name)
    ax.set_xticks(x, groups)
    ax.set(ylabel=ylabel, title=title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out
