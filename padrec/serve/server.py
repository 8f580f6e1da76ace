"""Run the app with uvicorn: blocking (``padrec serve``) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from padrec.serve.service import AUTO, DEFAULT_MAX_K, RecService


def build_app(
    run_dir: str | Path, ann: str | None = None, max_k: int = DEFAULT_MAX_K, encoder: str | None = AUTO
) -> Any:
    """Load the run (and replay its added items) into a ready FastAPI app."""
    from padrec.serve.app import create_app

    return create_app(RecService(run_dir, ann=ann, max_k=max_k, embed=encoder))


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    ann: str | None = None,
    max_k: int = DEFAULT_MAX_K,
    encoder: str | None = AUTO,
    log_level: str = "info",
) -> None:
    """Load the run, then serve until interrupted."""
    import uvicorn

    uvicorn.run(build_app(run_dir, ann=ann, max_k=max_k, encoder=encoder), host=host, port=port, log_level=log_level)


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
