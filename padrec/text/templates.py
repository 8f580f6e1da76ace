"""Item text from templates over the item table, with an explicit fallback for items without text.

A template is a Python format string over ``item_table`` columns (``"{title}; {genres}"``). It is
cut into *segments* at top-level ``;``: a segment whose columns are all empty for an item is dropped
(so a movie without genres reads ``"Heat (1995)"``, not ``"Heat (1995); "``), the kept segments are
joined with ``"; "``. An item whose text ends up empty gets :data:`FALLBACK` (``"item <external id>"``):
never an empty string, hence never a NaN or all-zero vector. The padding row 0 has no text at all;
its vector is zero.

Defaults per dataset (:data:`TEMPLATES`) use only the columns a dataset has: MovieLens titles already
carry the year, so ``"{title}; {genres}"`` reads "title (year); genres".
"""

from __future__ import annotations

import math
import string
from typing import Any

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset

#: Default template segments per dataset (or dataset family prefix); segments whose columns the
#: dataset lacks are left out. Amazon files here carry titles only, richer metadata adds itself.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "ml-": ("{title}", "{genres}"),
    "amazon-": ("{title}", "{categories}", "brand: {brand}"),
    "mind": ("{title}",),
}
#: Text of an item whose template renders empty. Any item-table column may be used.
FALLBACK = "item {item_id}"

_FMT = string.Formatter()


def _segments(template: str) -> list[str]:
    """Split at ``;`` outside ``{...}`` fields."""
    out, depth, cur = [], 0, []
    for ch in template:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
        if ch == ";" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def template_fields(template: str) -> list[str]:
    """Column names a template reads (``{title!r:.40}`` → ``title``)."""
    names = []
    for _, field, _, _ in _FMT.parse(template):
        if field is None:
            continue
        root = field.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise ValueError(f"template {template!r}: use named columns such as {{title}}, not {{{field}}}")
        names.append(root)
    return names


def _columns(ds: SeqDataset) -> list[str]:
    return list(ds.item_table.columns) if ds.item_table is not None else ["item_id"]


def default_template(ds: SeqDataset) -> str:
    """The dataset's default template, restricted to the columns it has; own data: every text column."""
    cols = set(_columns(ds))
    segments = TEMPLATES.get(ds.name)
    if segments is None:
        segments = next((v for k, v in TEMPLATES.items() if k.endswith("-") and ds.name.startswith(k)), None)
    if segments is None:  # own data: every column but the id, in table order
        segments = tuple(f"{{{c}}}" for c in _columns(ds) if c != "item_id")
    kept = [s for s in segments if set(template_fields(s)) <= cols]
    return "; ".join(kept) if kept else FALLBACK


def _value(v: Any) -> str:
    if isinstance(v, list | tuple | np.ndarray):
        return ", ".join(s for s in (_value(x) for x in v) if s)
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def render(ds: SeqDataset, template: str | None = None, fallback: str = FALLBACK) -> tuple[list[str], np.ndarray]:
    """Texts of items 1..n and a boolean mask of the items that got the fallback text."""
    template = template or default_template(ds)
    table = ds.item_table if ds.item_table is not None else pd.DataFrame({"item_id": ds.item_ids})
    cols = list(table.columns)
    segments = _segments(template)
    seg_fields = [template_fields(s) for s in segments]
    needed = {f for fs in seg_fields for f in fs} | set(template_fields(fallback))
    missing = sorted(needed - set(cols))
    if missing:
        raise KeyError(
            f"template {template!r} (fallback {fallback!r}) uses column(s) {', '.join(map(repr, missing))}; "
            f"item table columns: {', '.join(cols)}"
        )
    use = [c for c in cols if c in needed]
    rows = table[use].iloc[1:].to_dict("records") if use else [{} for _ in range(len(table) - 1)]
    texts, used_fallback = [], np.zeros(len(rows), dtype=bool)
    for i, raw in enumerate(rows):
        row = {k: _value(v) for k, v in raw.items()}
        parts = [
            seg.format(**row).strip()
            for seg, fields in zip(segments, seg_fields, strict=True)
            if not fields or any(row[f] for f in fields)
        ]
        text = "; ".join(p for p in parts if p) if any(row[f] for fs in seg_fields for f in fs) else ""
        if not text:
            text = fallback.format(**row).strip() or "item"
            used_fallback[i] = True
        texts.append(text)
    return texts, used_fallback


def render_texts(ds: SeqDataset, template: str | None = None, fallback: str = FALLBACK) -> list[str]:
    """One text per internal item id 1..n (index 0, padding, has none)."""
    return render(ds, template, fallback)[0]
