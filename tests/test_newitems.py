"""The new-item protocol: items held out of training entirely, added afterwards from text (PAD), and the test users
whose target is one of them. The backbone cannot score them; PAD's text experts can."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from padrec.cli import app
from padrec.data.registry import load_dataset
from padrec.eval.newitems import evaluate_new_items, new_item_split
from padrec.models import get_model_class
from tests.conftest import needs_data


@pytest.fixture(scope="module")
def ml100k():
    needs_data("ml-100k")
    return load_dataset("ml-100k")


def test_held_out_items_leave_no_trace_in_training(ml100k):
    ns = new_item_split(ml100k, share=0.1, seed=2)
    held = set(ns.held)
    assert len(held) == round(0.1 * ml100k.n_items)
    train_ids = set(ns.train.dataset.item_ids[1:])
    assert not held & train_ids and len(train_ids) + len(held) == ml100k.n_items
    assert set(ns.targets) <= held and not any(held & set(h) for h in ns.histories)
    # exactly the users whose last item is held out (and who had 3+ interactions, one of them not held out)
    expected = [
        str(ml100k.user_ids[u]) for u in range(ml100k.n_users) if str(ml100k.item_ids[ml100k.sequence(u)[-1]]) in held
    ]
    assert ns.users == expected
    again = new_item_split(ml100k, share=0.1, seed=2)
    assert again.held == ns.held and new_item_split(ml100k, share=0.1, seed=3).held != ns.held
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\)"):
        new_item_split(ml100k, share=0.0)


def test_a_model_that_never_saw_the_items_ranks_them_last(ml100k):
    ns = new_item_split(ml100k, share=0.1, seed=2)
    pop = get_model_class("pop")().fit(ns.train)
    res = evaluate_new_items(pop, ns)
    assert res.protocol == "full-newitems" and res.n_users == len(ns.users)
    assert res.overall["HR@20"] == 0.0 and res.groups["scorable"]["users"] == 0


def test_pad_new_items_cli(ml100k, tmp_path):
    run = tmp_path / "pad"
    fast = ["max_epochs=1", "backbone.max_epochs=1", "backbone.max_len=20", "limit_train_batches=3",
            "backbone.limit_train_batches=3"]  # fmt: skip
    res = CliRunner().invoke(
        app,
        ["pad", "--dataset", "ml-100k", "--preset", "simfrozen", "--new-items", "0.1", "--seed", "2",
         "--run-dir", str(run), "--quiet", *fast],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "held out of training, added afterwards from text" in res.stdout
    rec = json.loads((run / "newitems.json").read_text())
    assert rec["share"] == 0.1 and rec["held_items"] == 168
    bb, pad = rec["results"]["sasrec"], rec["results"]["pad-sasrec"]
    assert bb["overall"]["HR@10"] == 0.0 and bb["groups"]["scorable"]["users"] == 0
    assert pad["groups"]["scorable"]["users"] == pad["n_users"] > 50
    # title similarity puts some brand-new targets in the top 20 of users who never saw them
    assert pad["overall"]["HR@20"] > 0
    # the run itself trained without the held-out items
    items = json.loads((run / "pad" / "items.json").read_text())["item_ids"]
    held = new_item_split(ml100k, share=0.1, seed=2).held
    assert len(items) - 1 == 1682 - 168 and not np.isin(items, held).any()
