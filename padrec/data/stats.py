"""Summary statistics of a dataset, as ``padrec data info`` prints them."""

from __future__ import annotations

import numpy as np

from padrec.data.dataset import SeqDataset


def describe(ds: SeqDataset) -> dict:
    """Counts, density and length distribution; ``empty_titles`` is ``None`` when there is no title column.

    ``text_columns`` lists item-table columns that hold text for at least one item.
    """
    lengths = np.asarray(ds.lengths)
    n_users, n_items, n = ds.n_users, ds.n_items, ds.n_interactions
    text_columns: list[str] = []
    empty_titles = None
    table = ds.item_table
    if table is not None:
        body = table.iloc[1:]
        for col in body.columns:
            if col != "item_id" and (body[col].fillna("").astype(str).str.strip() != "").any():
                text_columns.append(str(col))
        if "title" in body.columns:
            empty_titles = int((body["title"].fillna("").astype(str).str.strip() == "").sum())
    return {
        "dataset": ds.name,
        "users": int(n_users),
        "items": int(n_items),
        "interactions": int(n),
        "density": float(n / (n_users * n_items)) if n_users and n_items else 0.0,
        "avg_len": float(lengths.mean()) if n_users else 0.0,
        "median_len": float(np.median(lengths)) if n_users else 0.0,
        "min_len": int(lengths.min()) if n_users else 0,
        "max_len": int(lengths.max()) if n_users else 0,
        # catalogue items nobody has interacted with (an item table's brand-new items)
        "new_items": int((np.bincount(ds.items, minlength=n_items + 1)[1:] == 0).sum()),
        "has_timestamps": ds.timestamps is not None,
        "text_columns": text_columns,
        "empty_titles": empty_titles,
    }
