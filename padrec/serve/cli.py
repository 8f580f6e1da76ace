"""``padrec serve``: registered on the main typer app by ``register(app)``; fastapi is imported only when run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command()
    def serve(
        run: Annotated[Path, typer.Option(help="A saved run directory (any padrec model; for PAD, RUN/pad).")],
        host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless behind a proxy.")] = (
            "127.0.0.1"
        ),
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        ann: Annotated[
            str,
            typer.Option(help="Approximate index for sequential models: none, hnsw or flat (faiss-cpu)."),
        ] = "none",
        max_k: Annotated[int, typer.Option(help="Largest k a request may ask for (larger k: 422).")] = 1000,
        encoder: Annotated[
            str,
            typer.Option(
                help="Text encoder for items posted without 'vector': auto (the run's own), none (vectors "
                "required), 'minilm' or a model folder."
            ),
        ] = "auto",
        threads: Annotated[
            int,
            typer.Option(
                help="torch intra-op threads per request. 1 (default): parallel requests use the cores, without "
                "oversubscription; more can lower single-request latency on big catalogues with idle cores. "
                "0 keeps torch's default."
            ),
        ] = 1,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Serve recommendations over HTTP (POST /recommend, /recommend/batch, /items; GET /health, /metrics).

        Items added with POST /items are kept in RUN/added_items.jsonl and replayed on start. API docs at /docs.
        """
        import importlib.util

        if not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn")):
            typer.secho("error: serving needs fastapi and uvicorn: pip install 'padrec[serve]'", fg="red", err=True)
            raise typer.Exit(2) from None
        from padrec.serve.server import build_app

        if threads:
            import torch

            torch.set_num_threads(threads)
        try:
            web = build_app(
                run, ann=None if ann == "none" else ann, max_k=max_k, encoder=None if encoder == "none" else encoder
            )
        except (FileNotFoundError, ValueError, KeyError, RuntimeError, ImportError) as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None
        import uvicorn

        typer.echo(f"serving {run} on http://{host}:{port} (docs: /docs)", err=True)
        uvicorn.run(web, host=host, port=port, log_level=log_level)
