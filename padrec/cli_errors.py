"""One way for every ``padrec`` command to turn bad input into one clear red line and exit code 2.

A user who typed something wrong should read what and where (file, line, field or option) and what was
expected, on one line, never a traceback; the checks here run before a command writes anything.
"""

from __future__ import annotations

import inspect
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
import typer.core
from typer.core import TyperGroup

# typer >= 0.20 vendors click as typer._click (its exceptions are not click's); older typer uses click itself
_exc = getattr(getattr(typer.core, "_click", None), "exceptions", None)
if _exc is None:  # pragma: no cover
    import click.exceptions as _exc


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: msg`` on one line (a multi-line library message is joined) and exit with ``code``."""
    line = "; ".join(s.strip() for s in str(msg).strip().splitlines() if s.strip()) or "failed"
    typer.secho(f"error: {line}", fg="red", err=True)
    raise typer.Exit(code)


def run_or_exit(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a data, config, lookup, file or value error becomes one line instead of a traceback."""
    from pydantic import ValidationError

    from padrec.data.errors import DataError
    from padrec.train.config import ConfigError, validation_message

    try:
        return fn()
    except ValidationError as e:  # a pydantic model built from user input (e.g. the evaluation protocol)
        fail(f"invalid {e.title}: {validation_message(e)}")
    except (DataError, ConfigError, KeyError, FileNotFoundError, ValueError, ImportError, TimeoutError) as e:
        fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))


def check_choice(option: str, value: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else exit naming the option and the choices."""
    if value not in allowed:
        fail(f"{option}: expected {' or '.join(map(repr, allowed))}, got {value!r}")
    return value


def make_plain(cls: type, overrides: dict[str, Any], model: str) -> Any:
    """A model without a typed config (pop, random) built from ``key=value`` overrides; unknown keys exit."""
    params = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    unknown = [k for k in overrides if k not in params]
    if unknown:
        known = ", ".join(params) if params else "none"
        fail(f"unknown config key {unknown[0]!r} for model {model!r}; its keys: {known}")
    return run_or_exit(lambda: cls(**overrides))


def check_catalogue(rec: Any, dataset: Any, run: Any) -> None:
    """Exit when the run was trained on other items than ``dataset`` (its scores would index the wrong items)."""
    import numpy as np

    ids = getattr(rec, "item_ids", None)
    n = len(dataset.item_ids)  # items added after training (PAD) come after the trained ones
    if ids is not None and (len(ids) < n or not np.array_equal(np.asarray(ids[:n], dtype=object), dataset.item_ids)):
        fail(
            f"{run} was trained on another item catalogue ({len(ids) - 1:,} items) than dataset "
            f"{dataset.name!r} ({dataset.n_items:,} items): evaluate it on the data it was trained on "
            f"(see {run}/dataset.json)"
        )


class OneLineUsage(TyperGroup):
    """The root command group: a usage error (missing option, ``-k abc``) is one ``error:`` line too.

    typer would draw a multi-line box; scripts and users grep for ``error:``. Help requests keep typer's output.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except getattr(_exc, "NoArgsIsHelpError", ()) as e:
            e.show()
            sys.exit(e.exit_code)
        except _exc.UsageError as e:
            where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            typer.secho(f"error: {e.format_message()}{where}", fg="red", err=True)
            sys.exit(e.exit_code)
        except _exc.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def check_run_dir(run_dir: Path | None, resume: bool) -> None:
    """Exit on a ``--run-dir`` that cannot hold a run, or a ``--resume`` with nothing to resume from."""
    if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
        fail(f"--run-dir {run_dir}: exists and is not a directory")
    if resume and not (run_dir is not None and (run_dir / "checkpoints" / "last.ckpt").is_file()):
        fail(
            f"--resume: {run_dir}/checkpoints/last.ckpt not found, nothing to resume "
            "(drop --resume to start a new run there)"
        )


def fit_or_exit(fn: Callable[[], Any], run_dir: Path, fresh: bool) -> Any:
    """Run a training ``fn``; a configuration the trainer rejects (e.g. ``limit_train_batches`` giving no batch)
    exits in one line, and a run directory this command created is removed rather than left half-written."""
    from padrec.data.errors import DataError
    from padrec.train.config import ConfigError

    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # pragma: no cover
        MisconfigurationException = ConfigError
    try:
        return fn()
    except (MisconfigurationException, ConfigError, DataError) as e:
        if fresh and not any(run_dir.glob("checkpoints/*.ckpt")):  # never throw away trained epochs
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(str(e))
