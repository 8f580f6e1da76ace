"""``padrec palr ...``: PALR's stages from the command line (wired in by ``register(app)``).

    padrec palr build-data --dataset ml-1m [key=value ...]
    padrec palr finetune   --dataset ml-1m [--lm smollm2] [--no-resume]
    padrec palr evaluate   --dataset ml-1m [--zero-shot] [--mode likelihood|generation] [--max-users 200]
    padrec palr run        --dataset ml-1m [--zero-shot]          # every stage, finished ones reused
    padrec palr profiles   --dataset ml-1m [--max-users 50]       # make/cache profiles only

Extra ``key=value`` arguments override :class:`padrec.palr.config.PALRConfig` fields (``lr=1e-4
tasks=[recommend] user_fraction=0.2``). Every command takes ``--json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from padrec.cli_errors import fail as _fail
from padrec.cli_errors import run_or_exit as _run
from padrec.cli_options import AsJson, DataDir, OwnData, Quiet, apply_quiet, own_data_options

palr_app = typer.Typer(no_args_is_help=True, help="PALR: profile, retrieve and rank with an instruction-tuned LM.")

_CTX = {"allow_extra_args": True, "ignore_unknown_options": False}
Dataset = Annotated[str | None, typer.Option(help="Dataset name or path (default: the run dir's dataset.json).")]
RunDir = Annotated[Path | None, typer.Option(help="Run directory (default runs/DATASET/palr).")]
Lm = Annotated[str | None, typer.Option(help="smollm2 (default), gemma3-270m, hf:<id> or a local model dir.")]
Retriever = Annotated[str | None, typer.Option(help="A trained run dir (default: sasrec) or an untrained model name.")]
Mode = Annotated[str | None, typer.Option(help="likelihood (default), generation or verbalizer.")]
MaxUsers = Annotated[int | None, typer.Option(help="Evaluate a seeded sample of this many users (0 = all).")]


def register(app: typer.Typer) -> None:
    """Add the ``palr`` sub-app to padrec's command line."""
    app.add_typer(palr_app, name="palr")


def _setup(
    ctx: typer.Context,
    dataset: str | None,
    data_dir: Path | None,
    run_dir: Path | None,
    own: OwnData | None = None,
    quiet: bool = False,
    *,
    command: str,
    zero_shot: bool = False,
    **flags: Any,
) -> tuple[Any, Path, Any]:
    """(split, run dir, config) from the options; writes ``dataset.json`` into the run dir.

    Every check that can refuse the command runs first, before any model loads or anything is written: the
    config, the retriever (a name or a run trained on this dataset's items), the language model(s) the
    ``command`` will load, and the finished stages it would reuse (instruction data of this dataset, data and
    format; fine-tuning with the same options). ``own``: the values of ``--items`` and the column options."""
    from padrec.cli_options import DataRef, announce_new_items
    from padrec.data.split import leave_one_out
    from padrec.palr.config import load_palr_config
    from padrec.palr.lm import check_lm
    from padrec.palr.pipeline import check_stages
    from padrec.palr.retrieval import check_retriever
    from padrec.train.config import parse_overrides

    apply_quiet(quiet, False)
    ref = None
    if dataset is None and run_dir is not None:
        ref = _run(lambda: DataRef.read(run_dir))
        if ref is not None and data_dir is not None:
            ref.data_dir = str(data_dir)
    if dataset is None and ref is None:
        _fail("give --dataset (or a --run-dir that has a dataset.json)")
    stored = ref is not None
    ref = ref or (own or OwnData()).ref(dataset, data_dir)
    ds = _run(ref.load)
    announce_new_items(ds, quiet)
    overrides = _run(lambda: parse_overrides(list(ctx.args)))
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if overrides.get("max_users") == 0:
        overrides["max_users"] = None
    cfg = _run(lambda: load_palr_config(ds.name, overrides))
    ranks = command in ("evaluate", "run") or (command == "finetune" and cfg.select_every > 0)  # selection ranks
    # a bad retriever fails before any LM loads or anything is written; one that ranks is checked against the data
    _run(lambda: check_retriever(cfg.retriever, ds if ranks else None))
    run_dir = run_dir or Path("runs") / ds.name / "palr"
    if run_dir.exists() and not run_dir.is_dir():
        _fail(f"--run-dir {run_dir}: exists and is not a directory")
    split = leave_one_out(ds)
    tuned = _tuned(run_dir)
    if command == "evaluate" and not zero_shot and tuned is None:
        _fail(f"{run_dir} has no finished fine-tuning: run `padrec palr finetune` first, or pass --zero-shot")
    for spec in _models_to_load(command, cfg, tuned, zero_shot):
        _run(lambda spec=spec: check_lm(spec))
    if command in ("build-data", "finetune") or (command == "run" and not zero_shot):
        _run(lambda: check_stages(split, run_dir, cfg, finetune=command != "build-data"))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not stored:
        ref.write(run_dir, ds)
    return split, run_dir, cfg


def _tuned(run_dir: Path) -> Path | None:
    from padrec.palr.finetune import finetuned_path

    try:
        return finetuned_path(run_dir / "finetune")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable finetune.json: the stage counts as not finished


def _models_to_load(command: str, cfg: Any, tuned: Path | None, zero_shot: bool) -> list[str]:
    """The language models ``command`` will load (so a missing one fails before any expensive work)."""
    profiles_lm = [cfg.lm] if cfg.profile == "lm" else []
    if command in ("build-data", "profiles"):
        return profiles_lm
    if zero_shot:
        return [cfg.lm]
    if command == "evaluate":
        return [str(tuned)]
    # finetune / run: the base model is trained unless the fine-tuning is finished, then that one is loaded
    return [cfg.lm] if tuned is None else [*profiles_lm, str(tuned)]


@palr_app.command("build-data", context_settings=_CTX)
@own_data_options
def build_data_cmd(
    ctx: typer.Context,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    own: OwnData | None = None,
    quiet: Quiet = False,
    run_dir: RunDir = None,
    lm: Lm = None,
    as_json: AsJson = False,
) -> None:
    """Instruction data (Recommend, Recommend_Retrieval) from training prefixes only → RUN_DIR/data."""
    from padrec.palr.pipeline import build_data

    split, run_dir, cfg = _setup(
        ctx,
        dataset,
        data_dir,
        run_dir,
        command="build-data",
        own=own,
        quiet=quiet or as_json,
        lm=lm,
    )
    meta, reused = _run(lambda: build_data(split, run_dir, cfg))
    out = {**{k: v for k, v in meta.items() if k != "config"}, "reused": reused, "path": str(run_dir / "data")}
    typer.echo(
        json.dumps(out, indent=2)
        if as_json
        else f"{'reused' if reused else 'built'} {meta['examples']} examples from {meta['users']} users "
        f"({meta['per_task']}), filled share {meta['filled_share']:.3f} → {run_dir / 'data'}"
    )


@palr_app.command("profiles", context_settings=_CTX)
@own_data_options
def profiles_cmd(
    ctx: typer.Context,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    own: OwnData | None = None,
    quiet: Quiet = False,
    run_dir: RunDir = None,
    lm: Lm = None,
    max_users: MaxUsers = None,
    as_json: AsJson = False,
) -> None:
    """Make and cache the profiles of the evaluated users (LM when profile=lm, else rule-based)."""
    import time

    from padrec.palr.pipeline import profile_store
    from padrec.palr.profile import profile_histories
    from padrec.palr.prompts import ItemCatalog
    from padrec.palr.retrieval import sample_users

    split, run_dir, cfg = _setup(
        ctx,
        dataset,
        data_dir,
        run_dir,
        command="profiles",
        own=own,
        quiet=quiet or as_json,
        lm=lm,
        max_users=max_users,
    )
    sub = sample_users(split, cfg.max_users, cfg.users_seed, cfg.stage)
    users = sub.users(cfg.stage)
    hists = profile_histories(sub.histories(cfg.stage, users), cfg.max_history)
    store = profile_store(run_dir, ItemCatalog.from_dataset(split.dataset, cfg.item_format))
    gen = None
    if cfg.profile == "lm":
        from padrec.palr.lm import generate, load_causal_lm

        model = _run(lambda: load_causal_lm(cfg.lm))

        def gen(ps: list[str]) -> list[str]:
            return generate(model, ps, cfg.profile_max_new_tokens, cfg.profile_batch_size)

    t0 = time.perf_counter()
    made = store.ensure(
        users,
        hists,
        generate=gen,
        lm_name=cfg.lm if gen else None,
        k=cfg.profile_keywords,
        items_per_keyword=cfg.profile_items_per_keyword,
        batch_size=cfg.profile_batch_size,
        progress=cfg.progress,
    )
    secs = time.perf_counter() - t0
    out = {
        "users": len(users),
        "made": made,
        "cached": len(store),
        "seconds": round(secs, 3),
        "users_per_second": made / secs if made and secs > 0 else None,
        **store.stats,
        "path": str(store.path),
    }
    typer.echo(
        json.dumps(out, indent=2)
        if as_json
        else f"{made} new profiles ({len(store)} cached) in {secs:.1f}s → {store.path}"
    )


@palr_app.command("finetune", context_settings=_CTX)
@own_data_options
def finetune_cmd(
    ctx: typer.Context,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    own: OwnData | None = None,
    quiet: Quiet = False,
    run_dir: RunDir = None,
    lm: Lm = None,
    resume: Annotated[bool, typer.Option(help="Continue from checkpoints/last.ckpt.")] = True,
    as_json: AsJson = False,
) -> None:
    """LoRA (or method=full) instruction fine-tuning on RUN_DIR/data → RUN_DIR/finetune."""
    from padrec.palr.pipeline import run_finetune

    split, run_dir, cfg = _setup(
        ctx,
        dataset,
        data_dir,
        run_dir,
        command="finetune",
        own=own,
        quiet=quiet or as_json,
        lm=lm,
    )
    _, summary, reused = _run(lambda: run_finetune(split, run_dir, cfg, resume=resume))
    out = {k: v for k, v in summary.items() if k != "config"} | {"reused": reused}
    typer.echo(
        json.dumps(out, indent=2)
        if as_json
        else f"{'reused' if reused else 'trained'}: {summary['steps']} steps, loss {summary['first_loss']} → "
        f"{summary['last_loss']}, saved {summary['path']}"
    )


@palr_app.command("evaluate", context_settings=_CTX)
@own_data_options
def evaluate_cmd(
    ctx: typer.Context,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    own: OwnData | None = None,
    quiet: Quiet = False,
    run_dir: RunDir = None,
    lm: Lm = None,
    retriever: Retriever = None,
    mode: Mode = None,
    max_users: MaxUsers = None,
    zero_shot: Annotated[bool, typer.Option(help="Rank with the base LM, not RUN_DIR's fine-tuned one.")] = False,
    as_json: AsJson = False,
) -> None:
    """Full-ranking HR/NDCG of PALR vs its retriever on a seeded user sample; hallucination/fallback counts."""
    from padrec.palr.finetune import finetuned_path
    from padrec.palr.lm import load_causal_lm
    from padrec.palr.pipeline import evaluate_palr, palr_label, ranking_lm

    split, run_dir, cfg = _setup(
        ctx,
        dataset,
        data_dir,
        run_dir,
        command="evaluate",
        zero_shot=zero_shot,
        own=own,
        quiet=quiet or as_json,
        lm=lm,
        retriever=retriever,
        mode=mode,
        max_users=max_users,
    )
    tuned = None if zero_shot else finetuned_path(run_dir / "finetune")  # there is one: _setup checked
    model = _run(lambda: ranking_lm(load_causal_lm(str(tuned) if tuned else cfg.lm), cfg))
    ev = _run(lambda: evaluate_palr(split, cfg, model, palr_label(cfg, tuned is not None), run_dir))
    typer.echo(json.dumps(ev.to_dict(), indent=2) if as_json else ev.table())


@palr_app.command("run", context_settings=_CTX)
@own_data_options
def run_cmd(
    ctx: typer.Context,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    own: OwnData | None = None,
    quiet: Quiet = False,
    run_dir: RunDir = None,
    lm: Lm = None,
    retriever: Retriever = None,
    mode: Mode = None,
    max_users: MaxUsers = None,
    zero_shot: Annotated[bool, typer.Option(help="Skip instruction data and fine-tuning.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted fine-tuning.")] = True,
    as_json: AsJson = False,
) -> None:
    """build-data → finetune → evaluate in one run directory, reusing finished stages."""
    from padrec.eval.runreport import palr_report
    from padrec.palr.pipeline import run_palr

    split, run_dir, cfg = _setup(
        ctx,
        dataset,
        data_dir,
        run_dir,
        command="run",
        zero_shot=zero_shot,
        own=own,
        quiet=quiet or as_json,
        lm=lm,
        retriever=retriever,
        mode=mode,
        max_users=max_users,
    )
    out = _run(lambda: run_palr(split, run_dir, cfg, zero_shot=zero_shot, resume=resume))
    report = palr_report(run_dir, split.dataset, out.evaluation)  # RUN/report.md: config, data, results, plots
    if out.skipped and not (quiet or as_json):
        typer.echo(f"reused finished stages: {', '.join(out.skipped)}", err=True)
    typer.echo(json.dumps(out.evaluation.to_dict(), indent=2) if as_json else out.evaluation.table())
    if not (quiet or as_json):
        typer.echo(f"report: {report}", err=True)
