"""Write a dataset as the two files own data comes in: an interactions CSV and an item table CSV.

For trying the own-data path (``--items``, ``padrec.Dataset.from_csv``) on real data, and for handing data to
other tools. ``holdout_items`` removes every interaction of a seeded share of the items while keeping them in
the item table: they become brand-new items, known only by their text, as in a catalogue that just grew.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset
from padrec.utils import atomic_write_with


def export_csv(
    ds: SeqDataset, out_dir: str | Path, holdout_items: float = 0.0, seed: int = 0
) -> tuple[Path, Path, list[str]]:
    """``out_dir/interactions.csv`` (user, item[, timestamp]) and ``out_dir/items.csv`` (item + text columns).

    Returns both paths and the external ids of the held-out items (in id order)."""
    if not 0.0 <= holdout_items < 1.0:
        raise ValueError(f"holdout_items must be in [0, 1), got {holdout_items}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held: np.ndarray = np.zeros(0, dtype=np.int64)
    if holdout_items > 0:
        n = max(1, round(holdout_items * ds.n_items))
        held = np.sort(np.random.default_rng(seed).choice(np.arange(1, ds.n_items + 1), size=n, replace=False))
    keep = ~np.isin(ds.items, held)
    events = pd.DataFrame(
        {
            "user": np.repeat(ds.user_ids, ds.lengths)[keep],
            "item": np.asarray(ds.item_ids, dtype=object)[ds.items[keep]],
        }
    )
    if ds.timestamps is not None:
        events["timestamp"] = ds.timestamps[keep]
    table = ds.item_table if ds.item_table is not None else pd.DataFrame({"item_id": ds.item_ids})
    items = table.iloc[1:].rename(columns={"item_id": "item"})
    inter_path, items_path = out / "interactions.csv", out / "items.csv"
    atomic_write_with(inter_path, lambda p: events.to_csv(p, index=False))
    atomic_write_with(items_path, lambda p: items.to_csv(p, index=False))
    return inter_path, items_path, [str(ds.item_ids[i]) for i in held]
