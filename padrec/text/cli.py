"""``padrec embed`` and ``padrec analyze concordance``: thin shells over :mod:`padrec.text`.

``padrec.cli`` calls :func:`register` once; heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from padrec.cli_errors import fail
from padrec.cli_errors import run_or_exit as _run
from padrec.cli_options import AsJson, DataDir, OwnData, Quiet, apply_quiet, own_data_options

Encoder = Annotated[str, typer.Option(help="minilm, or the folder of a sentence-transformers / transformers model.")]
Template = Annotated[
    str | None,
    typer.Option(help="Format string over item-table columns, e.g. '{title}; {genres}' (default per dataset)."),
]
Pooling = Annotated[str, typer.Option(help="transformers models: mean (over real tokens) or last (final token).")]


@own_data_options
def embed(
    dataset: Annotated[str, typer.Option(help="Dataset name or path.")],
    encoder: Encoder = "minilm",
    template: Template = None,
    pooling: Pooling = "mean",
    dtype: Annotated[str, typer.Option(help="transformers models: float32, float16, bfloat16 or auto.")] = "float32",
    device: Annotated[str, typer.Option(help="auto (cuda:LOCAL_RANK if a GPU is there), cpu, cuda:0...")] = "auto",
    max_length: Annotated[int | None, typer.Option(help="Token limit per text (default: the model's).")] = None,
    batch_size: int = 64,
    cache: Annotated[bool, typer.Option(help="Reuse a cached table when nothing changed.")] = True,
    shards: Annotated[str, typer.Option(help="Split the work: N, or 'auto' under torchrun/Lightning/srun.")] = "1",
    shard_index: Annotated[int | None, typer.Option(help="Encode only this shard (0-based) and exit.")] = None,
    merge: Annotated[bool, typer.Option(help="Merge the --shards N shard files into the table.")] = False,
    data_dir: DataDir = None,
    own: OwnData | None = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Embed every item's text once (cached; a changed encoder, template or text recomputes)."""
    from padrec.text import embed_items, embed_shard, merge_shards

    apply_quiet(quiet, as_json)
    if shards != "auto" and not (shards.isdigit() and int(shards) >= 1):
        fail(f"--shards: expected a positive integer or 'auto', got {shards!r}")
    n: Any = shards if shards == "auto" else int(shards)
    ref = (own or OwnData()).ref(dataset, data_dir)
    ds = _run(ref.load)
    opts = dict(pooling=pooling, dtype=dtype, max_length=max_length)
    if merge:
        emb = _run(lambda: merge_shards(ds, encoder, template, shards=int(n), **opts))
    elif shard_index is not None:
        res = _run(
            lambda: embed_shard(
                ds,
                encoder,
                template,
                shards=int(n),
                shard_index=shard_index,
                device=device,
                batch_size=batch_size,
                cache=cache,
                **opts,
            )
        )
        info = {"shard": res.index, "shards": res.shards, "rows": res.hi - res.lo, "seconds": round(res.seconds, 3)}
        info |= {"from_cache": res.from_cache, "path": str(res.path)}
        typer.echo(
            json.dumps(info, indent=2)
            if as_json
            else f"shard {res.index}/{res.shards}: {info['rows']:,} rows "
            f"in {res.seconds:.2f} s{' (cached)' if res.from_cache else ''}\n{res.path}"
        )
        return
    else:
        emb = _run(
            lambda: embed_items(
                ds, encoder, template, device=device, batch_size=batch_size, cache=cache, shards=n, **opts
            )
        )
    m = emb.manifest
    info = {
        "dataset": ds.name,
        "rows": emb.vectors.shape[0],
        "items": emb.n_items,
        "dim": emb.dim,
        "seconds": round(emb.seconds, 3),
        "from_cache": emb.from_cache,
        "encoder": m.get("encoder"),
        "template": m.get("template"),
        "fallback_texts": m.get("fallback_texts"),
        "path": str(emb.path),
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    how = "from cache" if emb.from_cache else f"encoded with {info['encoder']}"
    typer.echo(
        f"{info['rows']:,} rows ({info['items']:,} items + padding) x {info['dim']} dims in {emb.seconds:.2f} s, "
        f"{how}\ntemplate {info['template']!r}; {info['fallback_texts']} items without text used the fallback\n"
        f"{info['path']}"
    )


@own_data_options
def concordance(
    run: Annotated[Path, typer.Option(help="A run directory (padrec train) with an item table.")],
    encoder: Encoder = "minilm",
    template: Template = None,
    pooling: Pooling = "mean",
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the run's dataset.json).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours per item.")] = 10,
    sample: Annotated[int, typer.Option(help="Query items (0 = all).")] = 2000,
    pairs: Annotated[int, typer.Option(help="Random item pairs for the rank correlation.")] = 100_000,
    all_items: Annotated[bool, typer.Option(help="Include items never seen in training.")] = False,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="Write the figure (PNG) here.")] = None,
    data_dir: DataDir = None,
    own: OwnData | None = None,
    as_json: AsJson = False,
) -> None:
    """How far item neighbourhoods agree between a run's id space and the text space."""
    from padrec.cli_options import DataRef
    from padrec.text.analysis import run_concordance, scalars

    if k < 1:  # checked before the (slow) embedding
        fail(f"-k: expected a positive number of neighbours, got {k}")
    # the run's own data reference (with its --items) unless --dataset says otherwise
    ref = (own or OwnData()).ref(dataset, data_dir) if dataset else _run(lambda: DataRef.read(run))
    data = _run(ref.load) if ref is not None else None
    res = _run(
        lambda: run_concordance(
            run,
            encoder,
            dataset=data,
            data_dir=data_dir,
            template=template,
            pooling=pooling,
            k=k,  # type: ignore[arg-type]
            sample=sample or None,
            pairs=pairs,
            items="all" if all_items else "train",
            seed=seed,
            out=out,
        )
    )
    res = scalars(res)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    typer.echo(
        f"{res['dataset']}: {res['run']} vs {res['encoder']} over {res['n_items']:,} items ({res['items']}), "
        f"{res['n_queries']:,} queries\n"
        f"  overlap@{k}  {res['overlap_at_k']:.4f}  (random {res['overlap_random']:.4f}, "
        f"lift {res['overlap_lift']:.1f}x)\n"
        f"  Spearman of pair cosines  {res['spearman']:.4f}  over {res['n_pairs']:,} pairs"
        + (f"\n  plot {res['plot']}" if res["plot"] else "")
    )


def register(app: typer.Typer) -> None:
    """Add ``embed`` and ``analyze concordance`` to the main app (reusing an existing ``analyze`` group)."""
    app.command("embed")(embed)
    analyze = next((g.typer_instance for g in app.registered_groups if g.name == "analyze"), None)
    if analyze is None:
        analyze = typer.Typer(no_args_is_help=True, help="Analyses of trained runs.")
        app.add_typer(analyze, name="analyze")
    analyze.command("concordance")(concordance)
