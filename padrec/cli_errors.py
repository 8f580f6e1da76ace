"""One way for every ``padrec`` command to turn a library error into a clear red line and exit code 2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import typer


def fail(msg: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def run_or_exit(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a data, config, lookup, file or value error becomes one line instead of a traceback."""
    from padrec.data.errors import DataError
    from padrec.train.config import ConfigError

    try:
        return fn()
    except (DataError, ConfigError, KeyError, FileNotFoundError, ValueError, ImportError, TimeoutError) as e:
        fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
