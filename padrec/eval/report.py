"""Benchmark result files: ``bench/results/<name>.json`` (``{"records": [...]}``) + ``<name>.md``.

Records follow MISSION.md §5 (``task, dataset, model, protocol, metrics, groups, device, seeds,
commit, date, note``). Both files are written atomically so a crashed benchmark never leaves a
half-written result that a later reader would trust.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Sequence
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
