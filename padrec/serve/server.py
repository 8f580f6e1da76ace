"""Run the app with uvicorn: blocking (``padrec serve``) or in a background thread (tests, benchmarks).

Several worker processes (``workers > 1``) are uvicorn's: each imports :func:`app_from_env`, which
rebuilds the app from the settings the parent put in ``PADREC_SERVE`` (JSON), so each worker loads the
run and replays its log on its own. Such a server is read-only (POST /items answers 409): an item added
through one worker would be missing from the others' models, and two processes appending to one log
would give the items different internal ids on replay. Add items with one worker, then restart with more.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from padrec.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WAIT_MS
from padrec.serve.service import AUTO, DEFAULT_MAX_K, RecService

ENV = "PADREC_SERVE"


def build_app(
    run_dir: str | Path,
    ann: str | None = None,
    max_k: int = DEFAULT_MAX_K,
    encoder: str | None = AUTO,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_WAIT_MS,
    read_only: str | None = None,
) -> Any:
    """Load the run (and replay its added items) into a ready FastAPI app."""
    from padrec.serve.app import create_app

    service = RecService(run_dir, ann=ann, max_k=max_k, embed=encoder, read_only=read_only)
    return create_app(service, max_batch=max_batch, batch_wait_ms=batch_wait_ms)


def workers_read_only(workers: int) -> str:
    return (
        f"it runs {workers} worker processes, each with its own copy of the model, so an item added through one "
        "would be missing from the others; add items on a server started with --workers 1, then restart"
    )


def app_from_env() -> Any:
    """uvicorn's app factory for ``--workers N``: the app built from the JSON settings in ``$PADREC_SERVE``."""
    raw = os.environ.get(ENV)
    if not raw:
        raise RuntimeError(f"${ENV} is not set: start workers with `padrec serve --workers N`")
    cfg = json.loads(raw)
    threads = cfg.pop("threads", 0)
    if threads:
        import torch

        torch.set_num_threads(threads)
    workers = cfg.pop("workers", 1)
    return build_app(**cfg, read_only=workers_read_only(workers) if workers > 1 else None)


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    ann: str | None = None,
    max_k: int = DEFAULT_MAX_K,
    encoder: str | None = AUTO,
    log_level: str = "info",
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_WAIT_MS,
) -> None:
    """Load the run, then serve until interrupted (one process; ``padrec serve --workers N`` for more)."""
    import uvicorn

    web = build_app(run_dir, ann=ann, max_k=max_k, encoder=encoder, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    uvicorn.run(web, host=host, port=port, log_level=log_level)


class ServerThread:
    """uvicorn serving ``app`` from a daemon thread on a socket bound before start (port 0 = a free port).

    Binding first means no race for the port and the URL is known before the first request.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
