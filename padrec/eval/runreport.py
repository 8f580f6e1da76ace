"""Run reports: ``RUN/report.md``, one page a person reads after ``padrec train``, ``pad`` or ``palr run``.

The numbers of a run are spread over config files, metrics JSON, CSV logs and a plot; the report puts the
config, the data, the result table (its protocol named), the per-bin plot and the training curve in one
markdown file with the PNGs beside it. Pure functions over results and run folders; matplotlib is imported
only to draw, and without it the report is still written, with every table and without pictures.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from padrec.eval.results import Results
from padrec.utils import atomic_path, atomic_write_text

REPORT = "report.md"
BINS_PNG = "bins.png"
CURVE_PNG = "curve.png"
NO_PLOT = "(no pictures: matplotlib is not installed; `pip install 'padrec[plot]'`)"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


# -- sections -------------------------------------------------------------------------------------------
def data_markdown(ds: Any) -> str:
    """Users, items, interactions and history lengths of the (prepared) dataset the run used."""
    from padrec.data.stats import describe

    d = describe(ds)
    rows = [
        ("users", _fmt(d["users"])),
        ("items", _fmt(d["items"])),
        ("interactions", _fmt(d["interactions"])),
        ("density", f"{d['density']:.5f}"),
        ("median history length", f"{d['median_len']:g}"),
        ("mean history length", f"{d['avg_len']:.1f}"),
        ("history length min / max", f"{d['min_len']} / {d['max_len']}"),
    ]
    return f"Dataset `{d['dataset']}`\n\n" + _table(["", "value"], rows)


def config_markdown(run_dir: str | Path, files: Sequence[str]) -> str:
    """The run's config files as written (``config.yaml``, ``pad.json``...), those that exist, in order."""
    run_dir = Path(run_dir)
    parts = []
    for name in files:
        path = run_dir / name
        if path.is_file():
            lang = "json" if path.suffix == ".json" else "yaml"
            parts.append(f"`{name}`\n\n```{lang}\n{path.read_text().rstrip()}\n```")
    return "\n\n".join(parts) or "(no config file in the run folder)"


def results_markdown(
    results: Mapping[str, Results] | Results,
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
) -> str:
    """One markdown table: overall, then every group; the protocol named above it.

    One model: all its metrics (Recall@k left out: it equals HR@k with one target). Several: ``metrics``
    (default HR@10, NDCG@10) per model, plus each model's NDCG@10 change over ``baseline`` (default the
    first model) in percent.
    """
    if isinstance(results, Results):
        results = {results.model: results}
    if not results:
        raise ValueError("results_markdown needs at least one result")
    names = list(results)
    first = results[names[0]]
    single = len(names) == 1
    if metrics is None:
        metrics = [k for k in first.overall if not k.startswith("Recall@")] if single else ["HR@10", "NDCG@10"]
    base = baseline or names[0]
    if base not in results:
        raise ValueError(f"baseline {base!r} is not one of the results: {', '.join(names)}")
    others = [n for n in names if n != base and "NDCG@10" in results[n].overall]
    head = ["group", "users", *(m if single else f"{n} {m}" for n in names for m in metrics)]
    head += [f"{n} vs {base} NDCG@10" for n in others]

    rows = []
    for g in ["overall", *first.groups]:
        users = first.n_users if g == "overall" else int(first.groups[g].get("users", 0))
        cells = [g, _fmt(users)]
        cells += [_fmt(results[n].group(g).get(m)) for n in names for m in metrics]
        for n in others:
            a, b = results[base].group(g).get("NDCG@10"), results[n].group(g).get("NDCG@10")
            ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a > 0
            cells.append(f"{100 * (b / a - 1):+.1f}%" if ok else "–")
        rows.append(cells)
    protocols = {r.protocol for r in results.values()}
    proto = ", ".join(f"`{p}`" for p in sorted(protocols))
    head_line = f"Protocol {proto}, stage `{first.stage}`, dataset `{first.dataset}`, {first.n_users:,} users."
    note = "Groups: `bin1`..`bin10` by the target item's training popularity (bin1 = most popular); "
    note += "`cold` = bins 8-10 + unseen items; `freq…` by the target's training count; `len…` by the user's "
    note += "history length."
    return f"{head_line}\n\n{_table(head, rows)}\n\n{note}"


def epoch_curve(run_dir: str | Path) -> Any:
    """Per-epoch ``train_loss`` and ``val_ndcg10`` of a run folder's CSV logs (every (re)start; the last value
    logged for an epoch wins, as a resumed run trains that epoch again). Empty when there are no logs."""
    import pandas as pd

    from padrec.train.trainer import VAL_METRIC, read_metrics

    df = read_metrics(run_dir)
    if df.empty or "epoch" not in df:
        return pd.DataFrame(columns=["epoch", "train_loss", VAL_METRIC])
    # the epoch mean; a run stopped by max_steps mid-epoch only has its steps' losses
    logged = [c for c in ("train_loss_epoch", "train_loss_step", "train_loss") if c in df and df[c].notna().any()]
    loss = df[logged[0]] if logged else None
    out = pd.DataFrame({"epoch": df["epoch"], "train_loss": loss, VAL_METRIC: df.get(VAL_METRIC)})
    out = out.dropna(subset=["epoch"]).astype({"epoch": int})
    return out.groupby("epoch", as_index=False).last().dropna(how="all", subset=["train_loss", VAL_METRIC])


def step_curve(run_dir: str | Path) -> Any:
    """``step`` and ``train_loss`` of every logged training step (for runs of one or two epochs, such as
    PALR's fine-tuning, where a per-epoch curve has too few points)."""
    import pandas as pd

    from padrec.train.trainer import read_metrics

    df = read_metrics(run_dir)
    col = "train_loss_step" if "train_loss_step" in df else "train_loss"
    if df.empty or col not in df or "step" not in df:
        return pd.DataFrame(columns=["step", "train_loss"])
    out = df[["step", col]].dropna().rename(columns={col: "train_loss"})
    return out.groupby("step", as_index=False).last()


def training_markdown(stages: Mapping[str, str | Path]) -> str:
    """Per stage: epochs, best epoch and its validation NDCG@10 (from ``train.json``), last training loss."""
    from padrec.train.trainer import VAL_METRIC

    rows = []
    for name, path in stages.items():
        path = Path(path)
        summary = json.loads((path / "train.json").read_text()) if (path / "train.json").is_file() else {}
        curve = epoch_curve(path)
        losses = curve["train_loss"].dropna() if len(curve) else []
        rows.append(
            [
                name,
                _fmt(summary.get("epochs", len(curve) or None)),
                _fmt(summary.get("best_epoch")),
                _fmt(summary.get(VAL_METRIC)),
                _fmt(float(losses.iloc[-1]) if len(losses) else None),
                _fmt(summary.get("seconds_per_epoch")),
            ]
        )
    head = ["stage", "epochs", "best epoch (from 0)", "best valid NDCG@10", "last train loss", "s / epoch"]
    return _table(head, rows)


# -- pictures -------------------------------------------------------------------------------------------
def plot_curves(stages: Mapping[str, str | Path], out: str | Path) -> Path | None:
    """PNG of train loss (left) and validation NDCG@10 (right) per epoch, one row per stage; None without logs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from padrec.train.trainer import VAL_METRIC

    curves = {name: epoch_curve(path) for name, path in stages.items()}
    curves = {k: v for k, v in curves.items() if len(v)}
    if not curves:
        return None
    fig = Figure(figsize=(11, 2.8 * len(curves) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(curves), 2, squeeze=False)
    for row, (name, c) in zip(axes, curves.items(), strict=True):
        loss, ndcg = c.dropna(subset=["train_loss"]), c.dropna(subset=[VAL_METRIC])
        steps = step_curve(stages[name]) if len(loss) < 3 else None
        if steps is not None and len(steps) > len(loss):  # too few epochs for a curve: every logged step
            row[0].plot(steps["step"], steps["train_loss"], marker="o", ms=2, color="#0072B2")
            row[0].set(title=f"{name}: train loss per step", xlabel="step", ylabel="loss")
        else:
            row[0].plot(loss["epoch"], loss["train_loss"], marker="o", ms=3, color="#0072B2")
            row[0].set(title=f"{name}: train loss", xlabel="epoch", ylabel="loss")
        title = f"{name}: validation NDCG@10"
        if len(ndcg):
            row[1].plot(ndcg["epoch"], ndcg[VAL_METRIC], marker="o", ms=3, color="#D55E00")
            best = ndcg.loc[ndcg[VAL_METRIC].idxmax()]
            row[1].axvline(best["epoch"], color="#999999", ls="--", lw=0.8)
            title += f" (best {best[VAL_METRIC]:.4f}, epoch {int(best['epoch'])})"
        else:
            row[1].text(0.5, 0.5, "no validation logged", ha="center", va="center", transform=row[1].transAxes)
        row[1].set(title=title, xlabel="epoch", ylabel="NDCG@10")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out


def _can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


# -- the report -----------------------------------------------------------------------------------------
def render_report(
    title: str,
    *,
    config: str,
    data: str | None,
    results: str | None,
    bins_png: str | None,
    training: str | None,
    curve_png: str | None,
    notes: Sequence[str] = (),
    pictures: bool = True,
) -> str:
    """The report's markdown from its sections (pictures linked by file name, relative to the report)."""
    parts = [f"# {title}", ""]
    parts += ["## Results", "", results or "(not evaluated)", ""]
    if bins_png:
        parts += [f"![per-bin results]({bins_png})", ""]
    parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    if training:
        parts += ["## Training", "", training, ""]
    if curve_png:
        parts += [f"![training curve]({curve_png})", ""]
    if not pictures:
        parts += [NO_PLOT, ""]
    if data:
        parts += ["## Data", "", data, ""]
    parts += ["## Config", "", config, ""]
    return "\n".join(parts)


def write_report(
    run_dir: str | Path,
    title: str,
    dataset: Any = None,
    results: Mapping[str, Results] | None = None,
    config_files: Sequence[str] = ("config.yaml",),
    stages: Mapping[str, str | Path] | None = None,
    notes: Sequence[str] = (),
    baseline: str | None = None,
) -> Path:
    """Write ``run_dir/report.md`` (atomically), drawing ``bins.png`` and ``curve.png`` beside it when
    matplotlib is there. ``stages`` maps a label to a folder with ``logs/run*/metrics.csv`` (a PAD run: one
    per stage); ``results`` maps a model label to its test results (the first is the baseline)."""
    from padrec.pad.pipeline import plot_bins

    run_dir = Path(run_dir)
    stages = {k: Path(v) for k, v in (stages or {}).items() if list(Path(v).glob("logs/run*/metrics.csv"))}
    pictures = _can_plot()
    bins = curve = None
    if pictures and results:
        bins = plot_bins(dict(results), run_dir / BINS_PNG, baseline=baseline).name
    if pictures and stages:
        drawn = plot_curves(stages, run_dir / CURVE_PNG)
        curve = drawn.name if drawn else None
    text = render_report(
        title,
        config=config_markdown(run_dir, config_files),
        data=data_markdown(dataset) if dataset is not None else None,
        results=results_markdown(results, baseline=baseline) if results else None,
        bins_png=bins,
        training=training_markdown(stages) if stages else None,
        curve_png=curve,
        notes=notes,
        pictures=pictures,
    )
    out = run_dir / REPORT
    atomic_write_text(out, text)
    return out


def train_report(run_dir: str | Path, dataset: Any, results: Results | None = None) -> Path:
    """The report of a ``padrec train`` run folder."""
    run_dir = Path(run_dir)
    model = results.model if results is not None else run_dir.name
    return write_report(
        run_dir,
        f"{model} on {getattr(dataset, 'name', dataset)}",
        dataset,
        {results.model: results} if results is not None else None,
        ("config.yaml", "dataset.json"),
        {"train": run_dir},
    )


def pad_report(run_dir: str | Path, dataset: Any, results: Mapping[str, Results]) -> Path:
    """The report of a ``padrec pad`` run folder: backbone, aligned tower and PAD side by side, one training
    curve per stage (``pretrain``, ``align``, ``text-expert``, ``pad``)."""
    run_dir = Path(run_dir)
    stages = {s: run_dir / s for s in ("pretrain", "align", "text-expert", "pad")}
    files = ("pad.json", "dataset.json", *(f"{s}/config.yaml" for s in stages))
    last = list(results)[-1] if results else "PAD"
    notes = []
    conc = run_dir / "concordance.json"
    if conc.is_file():
        c = json.loads(conc.read_text(encoding="utf-8"))
        b, a = c["before"], c["after"]
        notes.append(
            f"id-space vs text-space neighbours over {c['items']:,} items, overlap@{c['k']} before → after alignment: "
            f"{b['overlap_at_k']:.3f} → {a['overlap_at_k']:.3f} (random: {c['k'] / max(c['items'] - 1, 1):.3f})"
            + (" ![concordance](concordance.png)" if (run_dir / "concordance.png").is_file() else "")
        )
    title = f"{last} on {getattr(dataset, 'name', dataset)}"
    return write_report(run_dir, title, dataset, results, files, stages, notes=notes)


def palr_report(run_dir: str | Path, dataset: Any, evaluation: Any) -> Path:
    """The report of a ``padrec palr run`` folder: PALR next to its retriever on the same users, the LM's
    fine-tuning loss, hallucination and fallback rates, and with ``fusion=true`` the fused row and its weight."""
    run_dir = Path(run_dir)
    ev = evaluation
    results = {ev.retriever.model: ev.retriever, ev.results.model: ev.results}
    fusion = getattr(ev, "fusion", None)
    if fusion is not None:
        results[fusion.results.model] = fusion.results
    p = ev.palr
    notes = [
        f"hallucination rate {_fmt(p.get('hallucination_rate'))}, fallback share {_fmt(p.get('fallback_share'))}, "
        f"{_fmt(p.get('users_per_second'))} users/s",
        "retriever " + ", ".join(f"{k} {_fmt(v)}" for k, v in ev.recall.items() if k.startswith("Recall@")),
        f"note: {ev.note}",
        *([f"fusion: {fusion.note}"] if fusion is not None else []),
    ]
    return write_report(
        run_dir,
        f"{ev.results.model} on {getattr(dataset, 'name', dataset)}",
        dataset,
        results,
        ("config.json", "dataset.json"),
        {"finetune": run_dir / "finetune"},
        notes,
    )
