"""``padrec`` command line: a thin shell over the library (every command is a few library calls)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from padrec.cli_errors import OneLineUsage, check_catalogue, check_choice, check_run_dir, fit_or_exit, make_plain
from padrec.cli_errors import fail as _fail
from padrec.cli_errors import run_or_exit as _run
from padrec.cli_options import AsJson, DataDir, DataRef, OwnData, Quiet, apply_quiet, own_data_options

app = typer.Typer(cls=OneLineUsage, no_args_is_help=True, add_completion=False, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Datasets: list, statistics, download.")
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list() -> None:
    """Named datasets padrec knows."""
    from padrec.data.registry import DATASETS

    for name, spec in DATASETS.items():
        typer.echo(f"{name:16s} {spec.description}")


@data_app.command("info")
@own_data_options
def data_info(
    name: Annotated[str, typer.Argument(help="Dataset name (see `padrec data list`) or a file path.")],
    data_dir: DataDir = None,
    own: OwnData | None = None,
    as_json: AsJson = False,
) -> None:
    """Statistics of the raw dataset and of its prepared (benchmark) form."""
    from padrec.data.registry import load_dataset, load_raw
    from padrec.data.stats import describe

    ref = (own or OwnData()).ref(name, data_dir)

    def go() -> dict:
        kw = {"items": ref.items, "columns": ref.columns}
        is_path = Path(name).exists()
        raw = load_dataset(name, data_dir, use_cache=False, **kw) if is_path else load_raw(name, data_dir, **kw)
        prepared = load_dataset(name, data_dir, **kw)
        return {**describe(raw), "prepared": describe(prepared), "options": prepared.meta.get("options")}

    info = _run(go)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    rows = [("", "raw", "prepared")]
    keys = ("users", "items", "new_items", "interactions", "density", "avg_len", "median_len", "min_len", "max_len")
    for key in keys:
        fmt = (lambda v: f"{v:,}") if isinstance(info[key], int) else (lambda v: f"{v:.4g}")
        rows.append((key, fmt(info[key]), fmt(info["prepared"][key])))
    typer.echo(f"dataset {info['dataset']}  (prepared with {info['options']})")
    for r in rows:
        typer.echo(f"  {r[0]:14s}{r[1]:>14s}{r[2]:>14s}")
    typer.echo(f"  text columns: {', '.join(info.get('text_columns') or []) or 'none'}")


@data_app.command("export")
def data_export(
    name: Annotated[str, typer.Argument(help="Dataset name (see `padrec data list`) or a file path.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for interactions.csv and items.csv.")],
    data_dir: DataDir = None,
    holdout_items: Annotated[
        float, typer.Option(help="Share of items whose interactions are removed (kept in items.csv: new items).")
    ] = 0.0,
    seed: int = 0,
) -> None:
    """Write a prepared dataset as own data: interactions.csv + items.csv (try `--items` on real data)."""
    from padrec.data.export import export_csv
    from padrec.data.registry import load_dataset

    ds = _run(lambda: load_dataset(name, data_dir))
    inter, items, held = _run(lambda: export_csv(ds, out_dir, holdout_items, seed))
    typer.echo(f"{inter} ({ds.n_interactions:,} rows minus those of {len(held):,} held-out items)\n{items}")


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


def _load_split(ref: DataRef, split: str = "loo", quiet: bool = False) -> Any:
    from padrec.cli_options import announce_new_items
    from padrec.data.split import leave_one_out, time_split

    ds = _run(ref.load)
    announce_new_items(ds, quiet)
    return leave_one_out(ds) if split == "loo" else _run(lambda: time_split(ds))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
@own_data_options
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name, e.g. sasrec, gru4rec, bert4rec, caser, pop.")],
    dataset: Annotated[str, typer.Option(help="Dataset name or path.")],
    data_dir: DataDir = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default runs/DATASET/MODEL-TIME).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from RUN_DIR/checkpoints/last.ckpt.")] = False,
    evaluate: Annotated[bool, typer.Option(help="Evaluate the best checkpoint on test afterwards.")] = True,
    own: OwnData | None = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Train a model; extra arguments are config overrides such as `lr=0.002 model.d=128`."""
    from padrec.eval.runreport import train_report
    from padrec.models import get_model_class
    from padrec.train.config import parse_overrides, resolve
    from padrec.train.trainer import check_loggers, default_run_dir

    if resume and run_dir is None:
        _fail("--resume needs --run-dir")
    check_run_dir(run_dir, resume)
    quiet = apply_quiet(quiet, as_json)
    cls = _run(lambda: get_model_class(model))
    overrides = _run(lambda: parse_overrides(list(ctx.args)))
    ref = (own or OwnData()).ref(dataset, data_dir)
    split = _load_split(ref, quiet=quiet)
    if hasattr(cls, "config_cls"):
        params, tcfg = _run(lambda: resolve(model, cls.config_cls, split.dataset.name, overrides))
        _run(lambda: check_loggers(tcfg))  # a missing logger package fails now, not after the data is loaded
        rec = cls(params=params.model_dump(), train=tcfg.model_dump())
    else:
        rec = make_plain(cls, overrides, model)
    run_dir = run_dir or default_run_dir(split.dataset.name, model)
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    ref.write(run_dir, split.dataset)
    if hasattr(cls, "config_cls"):
        fit_or_exit(lambda: rec.fit(split, run_dir=run_dir, resume=resume), run_dir, fresh)
    else:
        rec.fit(split)
        rec.save(run_dir)
    if not quiet:
        typer.echo(f"saved {run_dir}", err=True)
    res = _evaluate_and_print(rec, split, run_dir, as_json=as_json) if evaluate else None
    report = train_report(run_dir, split.dataset, res)  # RUN/report.md: config, data, results, plots
    if not quiet:
        typer.echo(f"report: {report}", err=True)


def _evaluate_and_print(
    rec: Any,
    split: Any,
    run_dir: Path | None,
    protocol: Any = None,
    stage: str = "test",
    as_json: bool = False,
) -> Any:
    from padrec.eval.evaluator import Evaluator
    from padrec.eval.protocol import Protocol
    from padrec.utils import atomic_write_text

    res = _run(lambda: Evaluator(split, protocol or Protocol()).run(rec, stage=stage))
    res.model = getattr(rec, "label", rec.name)
    if run_dir is not None:
        atomic_write_text(run_dir / f"metrics-{res.protocol}-{stage}.json", res.to_json())
    typer.echo(res.to_json() if as_json else res.table())
    return res


@app.command()
@own_data_options
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
    own: OwnData | None = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Evaluate a model under a named protocol; results per popularity bin and history length."""
    from padrec.eval.protocol import Protocol
    from padrec.models import Recommender, get_model_class

    quiet = apply_quiet(quiet, as_json)
    check_choice("--protocol", protocol, ("full", "sampled"))
    check_choice("--sampler", sampler, ("uniform", "popularity"))
    check_choice("--stage", stage, ("test", "valid"))
    check_choice("--split", split, ("loo", "time"))
    proto = _run(lambda: Protocol(kind=protocol, sampler=sampler, n_negatives=n_negatives, seed=seed))
    given = None
    if dataset:
        given = (own or OwnData()).ref(dataset, data_dir)
    if run is not None:
        rec = _run(lambda: Recommender.load(run))  # a missing or broken run fails before the data loads
        stored = _run(lambda: DataRef.read(run))
        if given is None and stored is None:
            _fail(f"{run}/dataset.json is missing: pass --dataset")
        ref = given or stored
        if given is None and data_dir is not None:
            ref.data_dir = str(data_dir)
        sp = _load_split(ref, split, quiet)
        check_catalogue(rec, sp.dataset, run)
    elif model is not None and given is not None:
        sp = _load_split(given, split, quiet)
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
        pairs = [a.partition("=") for a in add_item]
        bad = next((a for a, (i, sep, _) in zip(add_item, pairs, strict=True) if not sep or not i.strip()), None)
        if bad is not None:
            _fail(f"--add-item {bad!r}: expected ID=text")
        if not getattr(rec, "can_add_items", False):
            _fail(f"model {rec.name!r} cannot score items it was not trained on (PAD runs can)")
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
@own_data_options
def pad(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Dataset name or path.")],
    backbone: Annotated[str, typer.Option(help="sasrec, gru4rec, bert4rec or caser.")] = "sasrec",
    encoder: Annotated[
        str, typer.Option(help="Text encoder: minilm (default), a sentence-transformers or HF path.")
    ] = ("minilm"),
    data_dir: DataDir = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default runs/DATASET/pad-BACKBONE).")] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Named configuration: paper (the published design), simfrozen (padrec's: title-similarity expert, "
            "pre-trained experts frozen), simcal (simfrozen with its gates calibrated on validation users), simcold "
            "(simcal that may give up 5% of overall NDCG@10 for cold items), or a "
            "fidelity preset: the paper's design with one official-code setting (paper-bce, paper-official, "
            "paper-bins11)."
        ),
    ] = None,
    new_items: Annotated[
        float | None,
        typer.Option(
            help="Hold this share of the items out of training entirely, add them afterwards from their text and "
            "report the test users whose target is one of them (the new-item protocol)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --new-items draw.")] = 0,
    own: OwnData | None = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """PAD: pre-train → embed → align → disentangle (finished stages are reused), then one comparison table.

    Extra arguments are overrides: PAD keys (lam=0.2 kernel=laplacian alignment=infonce
    experts=[collab,text] learn_gates=false; experts=[collab,aligned,similarity] swaps the trained text expert
    for title similarity to the last item), training keys (lr=0.001 max_epochs=50), and backbone keys
    with a prefix (backbone.d=128 backbone.max_epochs=100).
    """

    from padrec.eval.runreport import pad_report
    from padrec.pad.pipeline import check_overrides, comparison_table, run_pad, with_preset
    from padrec.train.config import parse_overrides

    quiet = apply_quiet(quiet, as_json)
    overrides = _run(lambda: with_preset(preset, parse_overrides(list(ctx.args))))
    ref = (own or OwnData()).ref(dataset, data_dir)
    split = _load_split(ref, quiet=quiet)
    ns = None
    if new_items is not None:
        from padrec.eval.newitems import new_item_split

        ns = _run(lambda: new_item_split(split.dataset, new_items, seed))
        split = ns.train
    _run(lambda: check_overrides(split, backbone, overrides))
    run_dir = run_dir or Path("runs") / split.dataset.name / f"pad-{backbone}"
    run_dir.mkdir(parents=True, exist_ok=True)
    ref.write(run_dir, split.dataset)
    text = full_text = None
    if ns is not None:  # one embedding of the whole catalogue: the run's rows now, the held-out rows afterwards
        from padrec.pad.pipeline import new_item_text

        full_text, text = _run(lambda: new_item_text(ns, encoder))
    out = _run(lambda: run_pad(split, run_dir, backbone=backbone, encoder=encoder, overrides=overrides, text=text))
    report = pad_report(run_dir, split.dataset, out.results)  # RUN/report.md: config, data, results, plots
    if out.skipped and not quiet:
        typer.echo(f"reused finished stages: {', '.join(out.skipped)}", err=True)
    fresh = {}
    if ns is not None:
        from padrec.pad.pipeline import new_item_results, new_item_table
        from padrec.utils import atomic_write_text

        fresh = _run(lambda: new_item_results(out, ns, encoder, full_text))
        record = {"share": ns.share, "seed": ns.seed, "held_items": len(ns.held)}
        record["results"] = {k: r.to_dict() for k, r in fresh.items()}
        atomic_write_text(run_dir / "newitems.json", json.dumps(record, indent=2))
    if as_json:
        res = {k: r.to_dict() for k, r in out.results.items()}
        if fresh:
            res["new_items"] = {k: r.to_dict() for k, r in fresh.items()}
        typer.echo(json.dumps(res, indent=2))
    else:
        typer.echo(comparison_table(out.results))
        if fresh:
            typer.echo(new_item_table(fresh, ns.share))
        if (run_dir / "bins.png").exists() and not quiet:
            typer.echo(f"per-bin plot: {run_dir / 'bins.png'}")
    if not quiet:
        typer.echo(f"report: {report}", err=True)


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
