"""Own data with an item table: items nobody has used yet are kept (the cold, brand-new items PAD is for),
counted, recommendable, and the ``--items`` options reach every command and are remembered by the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from padrec.cli import app
from padrec.data.prepare import PrepOptions
from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.data.stats import describe
from tests.conftest import needs_data

runner = CliRunner()


def _write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def shop(tmp_path):
    inter = _write(tmp_path, "events.csv", "uid,sku,ts\nu1,a,1\nu1,b,2\nu1,c,3\nu2,b,1\nu2,a,2\nu2,c,5\nu3,a,1\n")
    catalog = "sku,title,blurb\na,Apple,red\nnew,Brand new,fresh\nb,Banana,\nc,Cherry,x\n"
    items = _write(tmp_path, "catalog.csv", catalog)
    return inter, items


def test_items_without_interactions_are_kept_after_the_used_ones(shop):
    inter, items = shop
    cols = {"user_col": "uid", "item_col": "sku", "time_col": "ts"}
    ds = load_dataset(inter, items=items, columns=cols)
    assert ds.item_ids.tolist() == ["[PAD]", "a", "b", "c", "new"]
    assert ds.meta["new_items"] == 1 and describe(ds)["new_items"] == 1
    assert ds.titles()[4] == "Brand new" and ds.item_table["blurb"].tolist()[1:] == ["red", "", "x", "fresh"]
    split = leave_one_out(ds)
    assert split.train_item_counts[4] == 0 and split.popularity_bins[4] == 11  # the "unseen" bin
    # text_cols keeps only the named columns, and is part of the cache key (another table, another entry)
    only = load_dataset(inter, items=items, columns={**cols, "text_cols": "title"})
    assert list(only.item_table.columns) == ["item_id", "title"]
    assert only.meta["cache"]["dir"] != ds.meta["cache"]["dir"]


def test_filters_drop_rare_items_but_never_the_new_ones(shop):
    inter, items = shop
    cols = {"user_col": "uid", "item_col": "sku", "time_col": "ts"}
    ds = load_dataset(inter, items=items, columns=cols, options=PrepOptions(item_core=3))
    # a: 3 events, b: 2, c: 2 -> b and c fall below item_core=3; "new" has none at all and stays
    assert ds.item_ids.tolist() == ["[PAD]", "a", "new"]
    assert ds.meta["dropped"]["items"] == 2 and ds.meta["new_items"] == 1


def test_items_option_refused_for_a_named_dataset(tmp_path):
    items = _write(tmp_path, "items.csv", "item,title\n1,x\n")
    res = runner.invoke(app, ["evaluate", "--model", "pop", "--dataset", "ml-100k", "--items", str(items)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: an items file given for the named dataset 'ml-100k': those are for your own interaction files "
        "(CSV/TSV/Parquet); named datasets bring their own item text"
    ]


def test_items_with_a_sequence_file_is_refused(tmp_path):
    seqs = _write(tmp_path, "seqs.txt", "u1 a b c\n")
    items = _write(tmp_path, "items.csv", "item,title\na,x\n")
    res = runner.invoke(app, ["data", "info", str(seqs), "--items", str(items)])
    assert res.exit_code == 2 and "go with a CSV/TSV/Parquet interactions file" in res.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ml-100k as own data: interactions.csv without 5% of the movies, items.csv with all of them."""
    needs_data("ml-100k")
    out = tmp_path_factory.mktemp("own")
    res = runner.invoke(app, ["data", "export", "ml-100k", str(out), "--holdout-items", "0.05", "--seed", "3"])
    assert res.exit_code == 0, res.output
    ds = load_dataset("ml-100k")
    rng = np.random.default_rng(3)
    held = sorted(str(ds.item_ids[i]) for i in rng.choice(np.arange(1, ds.n_items + 1), size=84, replace=False))
    return out / "interactions.csv", out / "items.csv", held


def test_cli_train_evaluate_recommend_with_an_items_file(exported, tmp_path):
    inter, items, held = exported
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        ["train", "--model", "sasrec", "--dataset", str(inter), "--items", str(items), "--run-dir", str(run),
         "--quiet", "max_epochs=1", "model.max_len=20", "limit_train_batches=2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "have no interactions" not in res.output and "saved" not in res.output  # --quiet: the table only
    ref = json.loads((run / "dataset.json").read_text())
    assert ref["items"] == str(items.resolve()) and ref["dataset"] == str(inter.resolve())
    # evaluate --run reloads the same data (with the items file): every movie is in the catalogue
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_users"] == 943 and res.stderr == ""  # --json: the result and nothing else
    # a movie nobody watched in the interactions file is a valid history item and can be recommended
    res = runner.invoke(app, ["recommend", "--run", str(run), "--history", held[0], "-k", "1682", "--json"])
    recs = json.loads(res.stdout)
    assert res.exit_code == 0 and len(recs) == 1681 and set(held[1:]) <= {r["item_id"] for r in recs}


def test_new_items_are_announced(exported):
    inter, items, _ = exported
    res = runner.invoke(app, ["evaluate", "--model", "pop", "--dataset", str(inter), "--items", str(items)])
    assert res.exit_code == 0, res.output
    assert "interactions: 84 of 1,682 items have no interactions: kept as new items" in res.output


def test_data_info_counts_new_items(exported):
    inter, items, held = exported
    res = runner.invoke(app, ["data", "info", str(inter), "--items", str(items), "--json"])
    info = json.loads(res.stdout)
    assert res.exit_code == 0 and info["items"] == 1682 and info["new_items"] == len(held) == 84
    assert info["prepared"]["new_items"] == 84


def test_every_command_with_dataset_takes_the_own_data_options():
    import typer.main

    def walk(cmd, path=()):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, {p.name for p in cmd.params}

    own = {"items", "user_col", "item_col", "time_col", "item_id_col", "text_cols"}
    with_dataset = [(path, names) for path, names in walk(typer.main.get_command(app)) if "dataset" in names]
    assert len(with_dataset) >= 9  # train, evaluate, pad, embed and the five palr commands
    assert [p for p, names in with_dataset if not own <= names] == []
