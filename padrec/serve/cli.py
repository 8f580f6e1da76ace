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
        max_batch: Annotated[
            int,
            typer.Option(
                help="Most histories scored together: concurrent recommend requests are queued and scored with one "
                "model call on a worker thread. 1 turns batching off (each request scored alone in the thread pool)."
            ),
        ] = 64,
        batch_wait_ms: Annotated[
            float,
            typer.Option(
                help="How long a request may wait for others to share its batch, only under concurrent load "
                "(a lone client never waits); 0: only requests already queued share it."
            ),
        ] = 2.0,
        workers: Annotated[
            int,
            typer.Option(
                help="Worker processes (uvicorn's), each loading the run. More than 1 makes the server read-only: "
                "POST /items answers 409 (a worker would not see items added through another)."
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
        import json
        import os

        from padrec.serve.server import ENV, build_app, workers_read_only

        def fail(message: str) -> None:
            typer.secho(f"error: {message}", fg="red", err=True)
            raise typer.Exit(2) from None

        if max_batch < 1 or batch_wait_ms < 0 or workers < 1:
            fail("--max-batch and --workers must be at least 1, --batch-wait-ms must not be negative")
        if encoder not in ("auto", "none"):  # a bad --encoder fails now, not on the first POST /items
            from padrec.text.encoders import resolve_encoder

            try:
                resolve_encoder(encoder)
            except (FileNotFoundError, ValueError) as e:
                fail(f"--encoder: {e}")
        settings = {
            "run_dir": str(run),
            "ann": None if ann == "none" else ann,
            "max_k": max_k,
            "encoder": None if encoder == "none" else encoder,
            "max_batch": max_batch,
            "batch_wait_ms": batch_wait_ms,
        }
        import uvicorn

        if threads:
            import torch

            torch.set_num_threads(threads)
        try:  # with --workers N, a check here (and the log's torn tail dropped once) before the workers load it
            web = build_app(**settings, read_only=workers_read_only(workers) if workers > 1 else None)
        except (FileNotFoundError, ValueError, KeyError, RuntimeError, ImportError) as e:
            fail(str(e))
        if workers > 1:  # each worker builds its own app from the settings
            if web.state.batcher is not None:
                web.state.batcher.close()
            del web
            os.environ[ENV] = json.dumps({**settings, "threads": threads, "workers": workers})
            typer.echo(f"serving {run} on http://{host}:{port} with {workers} workers, read-only", err=True)
            uvicorn.run(
                "padrec.serve.server:app_from_env",
                factory=True,
                workers=workers,
                host=host,
                port=port,
                log_level=log_level,
            )
            return
        typer.echo(f"serving {run} on http://{host}:{port} (docs: /docs)", err=True)
        uvicorn.run(web, host=host, port=port, log_level=log_level)
