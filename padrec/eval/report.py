"""Benchmark result files: ``bench/results/<name>.json`` (``{"records": [...]}``) + ``<name>.md``.

Records follow MISSION.md §5 (``task, dataset, model, protocol, metrics, groups, device, seeds,
commit, date, note``). Both files are written atomically so a crashed benchmark never leaves a
half-written result that a later reader would trust.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from padrec.utils import atomic_write_text

_PKG = Path(__file__).resolve().parents[1]  # .../padrec


def default_results_dir() -> Path:
    """``<repo>/bench/results`` for a source checkout, else ``./bench/results``."""
    repo = _PKG.parent
    if (repo / "bench").is_dir() and (repo / "pyproject.toml").is_file():
        return repo / "bench" / "results"
    return Path.cwd() / "bench" / "results"


def git_commit(short: bool = True) -> str:
    """The checkout's current commit (short hash), or ``"unknown"`` outside a git checkout."""
    cmd = ["git", "-C", str(_PKG), "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def finite(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by ``None``: strict JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v))
    return str(v).replace("|", "\\|").replace("\n", " ")


def records_markdown(records: Sequence[dict], title: str | None = None) -> str:
    """One markdown table row per record: identity columns, every metric seen, then provenance."""
    metric_keys: list[str] = []
    for r in records:
        for k in r.get("metrics", {}):
            if k not in metric_keys:
                metric_keys.append(k)
    head = ["task", "dataset", "model", "protocol", *metric_keys, "device", "commit", "date", "note"]
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        m = r.get("metrics", {})
        row = [r.get(k) for k in head[:4]] + [m.get(k) for k in metric_keys] + [r.get(k) for k in head[-4:]]
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_bench(
    name: str,
    records: Sequence[dict],
    markdown: str | None = None,
    results_dir: str | Path | None = None,
) -> tuple[Path, Path]:
    """Write ``<results_dir>/<name>.json`` and ``<name>.md``; returns both paths.

    ``markdown`` is either a ready-made markdown document (any text containing a newline is written
    as given) or a one-line title for the default table of records (:func:`records_markdown`).
    """
    out = Path(results_dir) if results_dir is not None else default_results_dir()
    js, md = out / f"{name}.json", out / f"{name}.md"
    payload = json.dumps({"records": finite(list(records))}, indent=2, allow_nan=False, default=str)
    if markdown is not None and "\n" in markdown:
        text = markdown if markdown.endswith("\n") else markdown + "\n"
    else:
        text = records_markdown(records, markdown)
    atomic_write_text(js, payload + "\n")
    atomic_write_text(md, text)
    return js, md


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def merge_bench(
    name: str,
    new: Sequence[dict],
    key: Callable[[dict], Any],
    markdown: Callable[[list[dict]], str],
    keep_old: Callable[[dict, dict], bool] | None = None,
    results_dir: str | Path | None = None,
    update: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Read ``<name>.json``, replace the records that share a ``key`` with a new one, write both files.

    The read-modify-write holds a lock (``<name>.lock``), so benchmarks finishing at the same time in separate
    processes each add their records instead of the last writer dropping the others'. ``keep_old(old, new)``
    returning True keeps the stored record instead (e.g. it averages more seeds than the new one).
    ``update(records)`` edits stored records in place under the same lock (a field added to an existing
    record must not be read before the lock, or a writer finishing in between loses its change).
    Returns every record now stored.
    """
    out = Path(results_dir) if results_dir is not None else default_results_dir()
    with _locked(out / f"{name}.lock"):
        path = out / f"{name}.json"
        old = json.loads(path.read_text())["records"] if path.exists() else []
        by_key = {key(r): r for r in old}
        fresh = [r for r in new if not (keep_old and key(r) in by_key and keep_old(by_key[key(r)], r))]
        replaced = {key(r) for r in fresh}
        records = [r for r in old if key(r) not in replaced] + fresh
        if update is not None:
            update(records)
        write_bench(name, records, markdown(records), out)
    return records
