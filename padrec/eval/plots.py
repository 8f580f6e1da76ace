"""Grouped-result plots: one metric per group (e.g. popularity bins), one bar per model, error bars.

Per-bin tables of 10 bins × several models are hard to read; a bar chart shows at a glance where a
model wins (popular vs cold items). What people look for is the change against the backbone, so a
second panel draws each model's relative change (percent) against its baseline per group. At most
``max_series`` series are drawn (the baselines, then the models the caller keeps, then the largest
gains), each in its own colour. matplotlib is imported only here, when a plot is asked for
(``pip install 'padrec[plot]'``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from padrec.utils import atomic_path

#: Okabe-Ito's colour-blind-safe qualitative palette (black and yellow left out: black is too close to the
#: baselines' greys, yellow too faint on white)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")
#: baselines (backbones) in greys, so the eye goes to the models compared with them
BASELINE_COLOURS = ("#4D4D4D", "#A6A6A6", "#7F7F7F")


def baselines_of(names: Sequence[str], baseline: str | Mapping[str, str] | None) -> dict[str, str]:
    """``{series: its baseline}`` for every series compared with one (a baseline maps to nothing).

    ``baseline`` None means the first series; a string names one series for all; a mapping gives each series
    its own (several backbones in one figure: ``pad-gru4rec`` against ``gru4rec``, not ``sasrec``).
    """
    if not names:
        return {}
    if baseline is None or isinstance(baseline, str):
        base = names[0] if baseline is None else baseline
        if base not in names:
            raise ValueError(f"baseline {base!r} is not one of the series: {', '.join(names)}")
        return {n: base for n in names if n != base}
    unknown = sorted({b for b in baseline.values() if b not in names} | {n for n in baseline if n not in names})
    if unknown:
        raise ValueError(f"baseline mapping names unknown series {', '.join(unknown)}; series: {', '.join(names)}")
    return {n: b for n, b in baseline.items() if n != b}


def relative_change(value: float, base: float) -> float:
    """Percent change of ``value`` over ``base`` (NaN when either is missing or the base is 0)."""
    if base is None or value is None or not math.isfinite(base) or not math.isfinite(value) or base == 0:
        return float("nan")
    return 100.0 * (value / base - 1.0)


def select_series(
    series: Mapping[str, Mapping[str, float]],
    n: int = 6,
    keep: Sequence[str] = (),
    baseline: str | Mapping[str, str] | None = None,
    by: str = "overall",
) -> list[str]:
    """The ``n`` series worth drawing, in the caller's order: baselines, then ``keep``, then the largest gains.

    Gains are each series' relative change over its baseline on group ``by`` (the absolute value where a
    series has no baseline), so a variant of a weaker backbone is not crowded out by a stronger backbone's.
    """
    names = list(series)
    missing = [k for k in keep if k not in series]
    if missing:
        raise ValueError(f"keep names unknown series {', '.join(missing)}; series: {', '.join(names)}")
    if len(names) <= n:
        return names
    base_of = baselines_of(names, baseline)
    chosen = [b for b in dict.fromkeys(base_of.values())] + [k for k in keep]
    chosen = list(dict.fromkeys(chosen))

    def gain(name: str) -> float:
        v = series[name].get(by, float("nan"))
        g = relative_change(v, series[base_of[name]].get(by, float("nan"))) if name in base_of else v
        return g if math.isfinite(g) else -math.inf

    rest = sorted((x for x in names if x not in chosen), key=gain, reverse=True)
    chosen += rest[: max(0, n - len(chosen))]
    return [x for x in names if x in chosen]


def plot_groups(
    series: Mapping[str, Mapping[str, float]],
    out: str | Path,
    groups: Sequence[str] | None = None,
    errors: Mapping[str, Mapping[str, float]] | None = None,
    ylabel: str = "NDCG@10",
    title: str = "",
    *,
    baseline: str | Mapping[str, str] | None = None,
    relative: bool = True,
    max_series: int = 6,
    keep: Sequence[str] = (),
) -> Path:
    """PNG of grouped bars: ``series[model][group]`` = value, optional ``errors[model][group]`` = ±std.

    ``groups`` fixes the order on the x axis (default: the first series' keys); a group a model lacks is
    left empty rather than drawn as zero. With two or more series a lower panel shows each model's change
    against its ``baseline`` in percent (see :func:`baselines_of`; ``relative=False`` leaves it out).
    Beyond ``max_series`` only :func:`select_series`'s choice is drawn and the figure names the rest.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not series:
        raise ValueError("plot_groups needs at least one series")
    groups = list(groups) if groups is not None else list(next(iter(series.values())))
    if not groups:
        raise ValueError("plot_groups needs at least one group")
    names_all = list(series)
    base_of = baselines_of(names_all, baseline) if len(names_all) > 1 else {}
    names = select_series(series, max_series, keep, baseline if len(names_all) > 1 else None)
    base_of = {n: b for n, b in base_of.items() if n in names and b in names}
    dropped = [n for n in names_all if n not in names]
    bases = list(dict.fromkeys(base_of.values()))
    colours: dict[str, str] = {}
    others = iter(PALETTE * (1 + len(names) // len(PALETTE)))
    for n in names:
        colours[n] = BASELINE_COLOURS[bases.index(n) % len(BASELINE_COLOURS)] if n in bases else next(others)
    compared = [n for n in names if n in base_of]
    two = relative and bool(compared)

    fig = Figure(figsize=(max(8.0, 0.75 * len(groups) + 4), 7.0 if two else 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2)) if two else [fig.subplots()]
    x = np.arange(len(groups))

    def bars(ax: object, members: list[str], values: dict[str, np.ndarray], errs: dict[str, np.ndarray]) -> list:
        width = min(0.8 / len(members), 0.4)
        return [
            ax.bar(  # type: ignore[attr-defined]
                x + (k - (len(members) - 1) / 2) * width,
                values[name],
                width,
                yerr=errs.get(name),
                capsize=2,
                error_kw={"elinewidth": 0.8, "ecolor": "#333333"},
                color=colours[name],
                label=name,
            )
            for k, name in enumerate(members)
        ]

    vals = {n: np.array([series[n].get(g, np.nan) for g in groups], dtype=float) for n in names}
    errs = {n: np.array([errors[n].get(g, 0.0) for g in groups], dtype=float) for n in names if errors and n in errors}
    top = axes[0]
    bars(top, names, vals, errs)
    top.set(ylabel=ylabel, title=title)
    top.grid(axis="y", alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if two:
        low = axes[1]
        rel = {
            n: np.array([relative_change(a, b) for a, b in zip(vals[n], vals[base_of[n]], strict=True)])
            for n in compared
        }
        # ± the model's own spread over seeds, relative to its baseline's mean
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_err = {n: 100.0 * errs[n] / np.abs(vals[base_of[n]]) for n in compared if n in errs}
        handles = bars(low, compared, rel, rel_err)
        low.axhline(0.0, color="#333333", lw=0.8)
        one = len(set(base_of.values())) == 1
        low.set(ylabel=f"change vs {bases[0] if one else 'own backbone'} (%)")
        low.grid(axis="y", alpha=0.3)
        low.legend(
            handles,
            [f"{n} vs {base_of[n]}" for n in compared],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
    axes[-1].set_xticks(x, groups)
    if dropped:
        note = f"not drawn ({len(names)} of {len(names_all)} series shown): {', '.join(dropped)}"
        fig.supxlabel("\n".join(textwrap.wrap(note, 160, break_on_hyphens=False)), fontsize=8, color="#555555")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out


def plot_concordance(curve: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """Neighbourhood overlap@k of the id and text spaces, before vs after alignment, with random neighbours
    as the floor: does alignment make items that are close by behaviour also close by text?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(curve["k"])
    if not ks:
        raise ValueError("plot_concordance needs at least one k")
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = (("before", "before alignment (pre-trained ids vs raw text)", PALETTE[0], "o"),
              ("after", "after alignment (aligned ids vs adapted text)", PALETTE[1], "s"),
              ("random", "random neighbours", BASELINE_COLOURS[1], None))  # fmt: skip
    for key, label, colour, marker in styles:
        if key in curve:
            ax.plot(ks, curve[key], label=label, color=colour, marker=marker, linestyle="--" if marker is None else "-")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (nearest neighbours)")
    ax.set_ylabel("overlap@k of id and text neighbours")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=10)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
