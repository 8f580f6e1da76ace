"""``padrec`` command line: a thin shell over the library (every command is a few library calls)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from padrec.cli_errors import fail as _fail
from padrec.cli_errors import run_or_exit as _run

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Datasets: list, statistics, download.")
app.add_typer(data_app, name="data")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder holding the datasets (default: $PADREC_DATA or a user cache)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@data_app.command("list")
def data_list() -> None:
    """Named datasets padrec knows."""
    from padrec.data.registry import DATASETS

    for name, spec in DATASETS.items():
        typer.echo(f"{name:16s} {spec.description}")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="Dataset name (see `padrec data list`) or a file path.")],
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Statistics of the raw dataset and of its prepared (benchmark) form."""
    from padrec.data.registry import load_dataset, load_raw
    from padrec.data.stats import describe

    def go() -> dict:
        raw = load_raw(name, data_dir) if not Path(name).exists() else load_dataset(name, data_dir, use_cache=False)
        prepared = load_dataset(name, data_dir)
        return {**describe(raw), "prepared": describe(prepared), "options": prepared.meta.get("options")}

    info = _run(go)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    rows = [("", "raw", "prepared")]
    for key in ("users", "items", "interactions", "density", "avg_len", "median_len", "min_len", "max_len"):
        fmt = (lambda v: f"{v:,}") if isinstance(info[key], int) else (lambda v: f"{v:.4g}")
        rows.append((key, fmt(info[key]), fmt(info["prepared"][key])))
    typer.echo(f"dataset {info['dataset']}  (prepared with {info['options']})")
    for r in rows:
        typer.echo(f"  {r[0]:14s}{r[1]:>14s}{r[2]:>14s}")
    typer.echo(f"  text columns: {', '.join(info.get('text_columns') or []) or 'none'}")


@data_app.command("download")
def data_download(
    name: str,
    data_dir: DataDir = None,
    url: Annotated[str | None, typer.Option(help="Override the source URL (e.g. a mirror).")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the download.")] = None,
) -> None:
    """Fetch a dataset's public original into the data directory (checksummed, atomic)."""
    from padrec.data.download import download

    path = _run(lambda: download(name, data_dir, url=url, sha256=sha256))
    typer.echo(f"{name}: ready in {path}")


def _load_split(dataset: str, data_dir: Path | None, split: str = "loo") -> Any:
    from padrec.data.registry import load_dataset
    from padrec.data.split import leave_one_out, time_split

    ds = _run(lambda: load_dataset(dataset, data_dir))
    return leave_one_out(ds) if split == "loo" else _run(lambda: time_split(ds))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name, e.g. sasrec, gru4rec, bert4rec, caser, pop.")],
    dataset: Annotated[str, typer.Option(help="Dataset name or path.")],
    data_dir: DataDir = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default runs/DATASET/MODEL-TIME).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from RUN_DIR/checkpoints/last.ckpt.")] = False,
    evaluate: Annotated[bool, typer.Option(help="Evaluate the best checkpoint on test afterwards.")] = True,
    as_json: AsJson = False,
) -> None:
    """Train a model; extra arguments are config overrides such as `lr=0.002 model.d=128`."""
    from padrec.models import get_model_class
    from padrec.train.config import parse_overrides, resolve
    from padrec.train.trainer import default_run_dir

    if resume and run_dir is None:
        _fail("--resume needs --run-dir")
    cls = _run(lambda: get_model_class(model))
    overrides = _run(lambda: parse_overrides(list(ctx.args)))
    split = _load_split(dataset, data_dir)
    if hasattr(cls, "config_cls"):
        params, tcfg = _run(lambda: resolve(model, cls.config_cls, split.dataset.name, overrides))
        rec = cls(params=params.model_dump(), train=tcfg.model_dump())
    else:
        rec = _run(lambda: cls(**overrides))
    run_dir = run_dir or default_run_dir(split.dataset.name, model)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_dataset_ref(run_dir, dataset, data_dir, split.dataset)
    if hasattr(cls, "config_cls"):
        rec.fit(split, run_dir=run_dir, resume=resume)
    else:
        rec.fit(split)
        rec.save(run_dir)
    typer.echo(f"saved {run_dir}", err=True)
    if evaluate:
        _evaluate_and_print(rec, split, run_dir, as_json=as_json)


def _write_dataset_ref(run_dir: Path, dataset: str, data_dir: Path | None, ds: Any) -> None:
    from padrec.utils import atomic_write_text

    ref = {
        "dataset": dataset,
        "name": ds.name,
        "data_dir": str(data_dir) if data_dir else None,
        "options": ds.meta.get("options"),
    }
    atomic_write_text(run_dir / "dataset.json", json.dumps(ref, indent=2, default=str))


def _evaluate_and_print(
    rec: Any,
    split: Any,
    run_dir: Path | None,
    protocol: Any = None,
    stage: str = "test",
    as_json: bool = False,
) -> None:
    from padrec.eval.evaluator import Evaluator
    from padrec.eval.protocol import Protocol
    from padrec.utils import atomic_write_text

    res = Evaluator(split, protocol or Protocol()).run(rec, stage=stage)
    res.model = getattr(rec, "label", rec.name)
    if run_dir is not None:
        atomic_write_text(run_dir / f"metrics-{res.protocol}-{stage}.json", res.to_json())
    typer.echo(res.to_json() if as_json else res.table())


@app.command()
def evaluate(
    model: Annotated[str | None, typer.Option(help="Untrained model to fit and evaluate (pop, random).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name or path (with --model).")] = None,
    run: Annotated[Path | None, typer.Option(help="A run directory from `padrec train`.")] = None,
    data_dir: DataDir = None,
    protocol: Annotated[str, typer.Option(help="full (rank all items) or sampled (100 negatives).")] = "full",
    sampler: Annotated[str, typer.Option(help="Negative sampler for the sampled protocol: uniform|popularity.")] = (
        "uniform"
    ),
    n_negatives: Annotated[int, typer.Option(help="Negatives per user for the sampled protocol.")] = 100,
    stage: Annotated[str, typer.Option(help="test or valid.")] = "test",
    split: Annotated[str, typer.Option(help="loo (leave-one-out) or time (global time split).")] = "loo",
    count_test: Annotated[
        bool,
        typer.Option(help="pop only: count test/valid targets in popularity (a LEAK; reproduces S3Rec's row)."),
    ] = False,
    seed: int = 0,
    as_json: AsJson = False,
) -> None:
    """Evaluate a model under a named protocol; results per popularity bin and history length."""
    from padrec.eval.protocol import Protocol
    from padrec.models import Recommender, get_model_class

    proto = _run(lambda: Protocol(kind=protocol, sampler=sampler, n_negatives=n_negatives, seed=seed))
    if run is not None:
        refs = [p / "dataset.json" for p in (run, run.parent) if (p / "dataset.json").exists()]
        ref = json.loads(refs[0].read_text()) if refs else None
        if ref is None and dataset is None:
            _fail(f"{run}/dataset.json is missing: pass --dataset")
        sp = _load_split(dataset or ref["dataset"], data_dir or (ref or {}).get("data_dir"), split)
        rec = _run(lambda: Recommender.load(run))
    elif model is not None and dataset is not None:
        sp = _load_split(dataset, data_dir, split)
        cls = _run(lambda: get_model_class(model))
        rec = cls(count_test=True) if count_test and model == "pop" else cls()
        if hasattr(cls, "config_cls"):
            _fail(f"{model} must be trained first: padrec train --model {model} --dataset {dataset}")
        rec.fit(sp)
    else:
        _fail("give --run DIR, or --model and --dataset")
    _evaluate_and_print(rec, sp, run, proto, stage, as_json)


@app.command()
def recommend(
    run: Annotated[Path, typer.Option(help="A run directory from `padrec train`.")],
    history: Annotated[str, typer.Option(help="Comma-separated external item ids, oldest first.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many items.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Allow items already in the history.")] = False,
    add_item: Annotated[
        list[str] | None,
        typer.Option(help="PAD runs: score a new item 'ID=text' too (repeatable); not saved to the run."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Top-k items for one history (external ids in, external ids and titles out)."""
    from padrec.models import Recommender

    rec = _run(lambda: Recommender.load(run))
    if add_item:
        if not getattr(rec, "can_add_items", False):
            _fail(f"model {rec.name!r} cannot score items it was not trained on (PAD runs can)")
        pairs = [a.partition("=") for a in add_item]
        if any(not sep or not i.strip() for i, sep, _ in pairs):
            _fail("--add-item expects ID=text")
        _run(lambda: rec.add_items([{"id": i.strip(), "text": t, "title": t} for i, _, t in pairs]))
    items = [h.strip() for h in history.split(",") if h.strip()]
    if not items:
        _fail("--history is empty: give at least one item id")
    recs = _run(lambda: rec.recommend([items], k=k, exclude_seen=not include_seen))[0]
    if as_json:
        typer.echo(json.dumps(recs, indent=2))
        return
    for rank, r in enumerate(recs, 1):
        typer.echo(f"{rank:3d}  {r['item_id']:>12s}  {r['score']:9.4f}  {r['title']}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def pad(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Dataset name or path.")],
    backbone: Annotated[str, typer.Option(help="sasrec, gru4rec, bert4rec or caser.")] = "sasrec",
    encoder: Annotated[
        str, typer.Option(help="Text encoder: minilm (default), a sentence-transformers or HF path.")
    ] = ("minilm"),
    data_dir: DataDir = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default runs/DATASET/pad-BACKBONE).")] = None,
    as_json: AsJson = False,
) -> None:
    """PAD: pre-train → embed → align → disentangle (finished stages are reused), then one comparison table.

    Extra arguments are overrides: PAD keys (lam=0.2 kernel=laplacian alignment=infonce
    experts=[collab,text] learn_gates=false; experts=[collab,aligned,similarity] swaps the trained text expert
    for title similarity to the last item), training keys (lr=0.001 max_epochs=50), and backbone keys
    with a prefix (backbone.d=128 backbone.max_epochs=100).
    """
    from padrec.pad.pipeline import comparison_table, run_pad
    from padrec.train.config import parse_overrides

    overrides = _run(lambda: parse_overrides(list(ctx.args)))
    split = _load_split(dataset, data_dir)
    run_dir = run_dir or Path("runs") / split.dataset.name / f"pad-{backbone}"
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_dataset_ref(run_dir, dataset, data_dir, split.dataset)
    out = _run(lambda: run_pad(split, run_dir, backbone=backbone, encoder=encoder, overrides=overrides))
    if out.skipped:
        typer.echo(f"reused finished stages: {', '.join(out.skipped)}", err=True)
    if as_json:
        typer.echo(json.dumps({k: r.to_dict() for k, r in out.results.items()}, indent=2))
    else:
        typer.echo(comparison_table(out.results))
        if (run_dir / "bins.png").exists():
            typer.echo(f"per-bin plot: {run_dir / 'bins.png'}")


def _register_extras() -> None:
    """Commands whose code lives with its package (typer only is imported here)."""
    from padrec.serve.cli import register as register_serve
    from padrec.text.cli import register as register_text

    register_serve(app)
    register_text(app)
    try:
        from padrec.palr.cli import register as register_palr
    except ImportError:  # pragma: no cover
        return
    register_palr(app)


_register_extras()


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
