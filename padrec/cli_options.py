"""Options several commands share: the ``--dataset`` family (a named dataset or your own file, its item text table
and the columns to read, recorded in the run directory's ``dataset.json`` so later commands reload exactly the same
data) and ``--quiet``."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

_PANEL = "Own data (CSV/TSV/Parquet interactions)"

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder holding the datasets (default: $PADREC_DATA or a user cache)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Items = Annotated[
    Path | None,
    typer.Option(
        "--items",
        help="Item table (CSV/TSV/Parquet): an id column and text columns; items without interactions are kept as "
        "new items.",
        rich_help_panel=_PANEL,
    ),
]
UserCol = Annotated[str | None, typer.Option(help="User id column (default: user).", rich_help_panel=_PANEL)]
ItemCol = Annotated[str | None, typer.Option(help="Item id column (default: item).", rich_help_panel=_PANEL)]
TimeCol = Annotated[
    str | None,
    typer.Option(help="Time column (default: timestamp if present, else file order).", rich_help_panel=_PANEL),
]
ItemIdCol = Annotated[
    str | None, typer.Option(help="Id column of --items (default: the --item-col name).", rich_help_panel=_PANEL)
]
TextCols = Annotated[
    str | None,
    typer.Option(help="Comma-separated text columns of --items (default: all but the id).", rich_help_panel=_PANEL),
]
#: the own-data options, in :meth:`DataRef.of`'s order after ``data_dir``
OWN_OPTIONS: dict[str, Any] = {
    "items": Items,
    "user_col": UserCol,
    "item_col": ItemCol,
    "time_col": TimeCol,
    "item_id_col": ItemIdCol,
    "text_cols": TextCols,
}


@dataclass(frozen=True)
class OwnData:
    """The values of the own-data options of one command call."""

    items: Path | None = None
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    item_id_col: str | None = None
    text_cols: str | None = None

    def ref(self, dataset: str, data_dir: Path | str | None) -> DataRef:
        return DataRef.of(dataset, data_dir, *astuple(self))


def own_data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command ``--items`` and the column options in place of its ``own: OwnData`` parameter (written once
    here instead of six options in every command that takes ``--dataset``)."""
    sig = inspect.signature(fn, eval_str=True)  # typer reads __signature__ as is: real annotations, not strings
    params = list(sig.parameters.values())
    at = next(i for i, p in enumerate(params) if p.name == "own")
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    extra = [inspect.Parameter(n, kind, default=None, annotation=t) for n, t in OWN_OPTIONS.items()]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        own = OwnData(**{n: kwargs.pop(n, None) for n in OWN_OPTIONS})
        return fn(*args, own=own, **kwargs)

    command.__signature__ = sig.replace(parameters=[*params[:at], *extra, *params[at + 1 :]])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
    return command


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes: print only the result.")]


def apply_quiet(quiet: bool, as_json: bool) -> bool:
    """``--quiet`` and ``--json`` print the result only: no progress, no notes. Returns whether to be quiet."""
    from padrec.progress import set_quiet

    set_quiet(quiet or as_json)
    return quiet or as_json


@dataclass
class DataRef:
    """Where a run's data came from: enough to load the same prepared dataset again."""

    dataset: str
    data_dir: str | None = None
    items: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        dataset: str,
        data_dir: Path | str | None = None,
        items: Path | str | None = None,
        user_col: str | None = None,
        item_col: str | None = None,
        time_col: str | None = None,
        item_id_col: str | None = None,
        text_cols: str | None = None,
    ) -> DataRef:
        columns = {
            "user_col": user_col,
            "item_col": item_col,
            "time_col": time_col,
            "item_id_col": item_id_col,
            "text_cols": text_cols,
        }
        # own files are recorded absolute, so a run can be evaluated from another working directory
        if items is not None or any(v is not None for v in columns.values()) or Path(dataset).exists():
            dataset = str(Path(dataset).expanduser().resolve()) if Path(dataset).exists() else dataset
        return cls(
            dataset=dataset,
            data_dir=str(data_dir) if data_dir else None,
            items=str(Path(items).expanduser().resolve()) if items else None,
            columns={k: v for k, v in columns.items() if v is not None},
        )

    @classmethod
    def read(cls, run_dir: Path) -> DataRef | None:
        """The ``dataset.json`` of ``run_dir`` or of its parent (a PAD stage), or None."""
        for p in (run_dir, run_dir.parent):
            path = p / "dataset.json"
            if path.is_file():
                try:
                    ref = json.loads(path.read_text(encoding="utf-8"))
                    return cls(ref["dataset"], ref.get("data_dir"), ref.get("items"), dict(ref.get("columns") or {}))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}: not a padrec dataset reference ({e}); pass --dataset") from None
        return None

    def load(self) -> Any:
        from padrec.data.registry import load_dataset

        return load_dataset(self.dataset, self.data_dir, items=self.items, columns=self.columns)

    def write(self, run_dir: Path, ds: Any) -> None:
        from padrec.utils import atomic_write_text

        ref = {**asdict(self), "name": ds.name, "options": ds.meta.get("options")}
        atomic_write_text(run_dir / "dataset.json", json.dumps(ref, indent=2, default=str))


def announce_new_items(ds: Any, quiet: bool = False) -> None:
    """Say how many catalogue items have no interactions (they are kept, and only text can score them)."""
    n = int(ds.meta.get("new_items") or 0)
    if n and not quiet:
        typer.echo(
            f"{ds.name}: {n:,} of {ds.n_items:,} items have no interactions: kept as new items "
            "(recommendable; PAD scores them from their text)",
            err=True,
        )
