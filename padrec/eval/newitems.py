"""A true new-item evaluation: items held out of training entirely, added afterwards from their text alone.

Popularity bins are relative, so "cold" means different things on different datasets (on ml-1m its three
coldest bins hold movies with a median of 84 training interactions). This protocol makes "new" mean new: a
seeded share of the items loses **every** interaction before training, so no model sees them; after training,
models that can (PAD, :meth:`padrec.pad.recommender.PAD.add_item_vectors`) add them from their text vectors, and
the test users are those whose last interaction is such an item, ranked against the whole catalogue (trained
items + added ones), with the history (held-out items removed, as they were unknown) masked. A model that cannot
add items ranks the target last: it cannot recommend what it has never seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from padrec.data.dataset import SeqDataset
from padrec.data.prepare import keep_interactions
from padrec.data.split import Split, leave_one_out
from padrec.eval.metrics import metrics_from_ranks, target_ranks
from padrec.eval.results import Results

PROTOCOL = "full-newitems"


@dataclass(frozen=True)
class NewItemSplit:
    """What to train on, which items come later, and the users to test on them (external ids throughout)."""

    full: SeqDataset  # the dataset as given (its item table has the held-out items' text)
    train: Split  # leave-one-out of the dataset without any held-out interaction: models train on this
    held: list[str]  # external ids of the held-out items, in id order of ``full``
    users: list[str]  # test users: their last item is held out
    histories: list[list[str]]  # each user's items before that last one, held-out items removed
    targets: list[str]  # the held-out last items
    share: float
    seed: int

    def held_internal(self) -> np.ndarray:
        """Internal ids of the held-out items in ``full`` (rows of a text table of ``full``)."""
        return self.full.to_internal(self.held)


def drop_items(ds: SeqDataset, items: np.ndarray) -> SeqDataset:
    """``ds`` without any interaction of the internal ``items``; items renumbered 1..n in first-appearance order,
    users left with no interaction removed."""
    out = keep_interactions(ds, ~np.isin(ds.items, items))
    out.meta.update({**{k: v for k, v in ds.meta.items() if k in ("options", "raw", "dropped")},
                     "new_item_holdout": {"items": len(items)}})  # fmt: skip
    return out


def new_item_split(ds: SeqDataset, share: float = 0.05, seed: int = 0) -> NewItemSplit:
    """Hold out a seeded ``share`` of the items (uniformly over items) from training entirely."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"new-item share must be in (0, 1), got {share}")
    rng = np.random.default_rng(seed)
    n = max(1, round(share * ds.n_items))
    held = np.sort(rng.choice(np.arange(1, ds.n_items + 1), size=n, replace=False))
    is_held = np.zeros(ds.n_items + 1, dtype=bool)
    is_held[held] = True
    users, histories, targets = [], [], []
    for u in range(ds.n_users):
        seq = ds.sequence(u)
        if len(seq) >= 3 and is_held[seq[-1]]:
            hist = seq[:-1][~is_held[seq[:-1]]]
            if len(hist):
                users.append(str(ds.user_ids[u]))
                histories.append(ds.to_external(hist))
                targets.append(str(ds.item_ids[seq[-1]]))
    if not users:
        raise ValueError(f"dataset {ds.name!r}: no user's last item is among the {n} held-out items; raise the share")
    return NewItemSplit(
        full=ds,
        train=leave_one_out(drop_items(ds, held)),
        held=ds.to_external(held),
        users=users,
        histories=histories,
        targets=targets,
        share=share,
        seed=seed,
    )


def evaluate_new_items(
    model: Any, ns: NewItemSplit, label: str | None = None, ks: tuple[int, ...] = (10, 20)
) -> Results:
    """HR/NDCG/MRR@k of ``ns``'s test users, full ranking over every item ``model`` knows, history masked.

    A model that does not know the held-out items (it never added them) gets the worst rank for every user."""
    index = {str(e): i for i, e in enumerate(model.item_ids) if i}
    hist = [np.asarray([index[i] for i in h if i in index], dtype=np.int64) for h in ns.histories]
    known = [t in index for t in ns.targets]
    ranks = np.full(len(ns.targets), len(index), dtype=np.int64)  # unknown target: below every item
    rows = [k for k, ok in enumerate(known) if ok]
    for lo in range(0, len(rows), 512):
        part = rows[lo : lo + 512]
        scores = model.score([hist[k] for k in part])
        ranks[part] = target_ranks(scores, [index[ns.targets[k]] for k in part], [hist[k] for k in part])
    res = Results(
        protocol=PROTOCOL,
        dataset=ns.full.name,
        model=label or getattr(model, "label", model.name),
        stage="test",
        n_users=len(ranks),
        overall=metrics_from_ranks(ranks, ks),
    )
    res.groups = {"scorable": {"users": float(sum(known))}}
    return res
