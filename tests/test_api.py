"""The facade end to end on real data, as the README's first example uses it: own CSV files with an item
table, PAD fitted, evaluated, a brand-new item added from its text, recommendations, save and load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import padrec
from padrec.data.export import export_csv
from padrec.data.registry import load_dataset
from tests.conftest import needs_data

FAST = {"max_epochs": 1, "limit_train_batches": 3}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    needs_data("ml-100k")
    out = tmp_path_factory.mktemp("facade")
    inter, items, held = export_csv(load_dataset("ml-100k"), out, holdout_items=0.05, seed=1)
    # own column names, as a user's files have them
    pd.read_csv(inter).rename(columns={"user": "user_id", "item": "movie_id", "timestamp": "ts"}).to_csv(
        inter, index=False
    )
    return inter, items, held, out


def test_import_padrec_stays_light():
    import subprocess
    import sys

    code = "import sys, padrec; print(any(m.startswith(('torch', 'lightning', 'pandas')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_dataset_from_csv(own):
    inter, items, held, _ = own
    ds = padrec.Dataset.from_csv(inter, items=items, user="user_id", item="movie_id", time="ts")
    assert (ds.n_users, ds.n_items, ds.new_items) == (943, 1682, len(held))
    assert ds.history("1")[:2] == ["168", "172"]  # oldest first, stable on equal timestamps
    assert "84 new items" in repr(ds)
    with pytest.raises(KeyError, match="unknown user 'nobody'"):
        ds.history("nobody")


def test_pad_fit_evaluate_add_items_recommend_save_load(own):
    inter, items, held, out = own
    ds = padrec.Dataset.from_csv(inter, items=items, user="user_id", item="movie_id", time="ts")
    backbone = padrec.SASRec(max_len=20, **FAST)
    pad = padrec.PAD(backbone=backbone, preset="simfrozen", run_dir=out / "pad", **FAST).fit(ds)
    res = pad.evaluate()
    assert res.n_users == 943 and res.protocol == "full-loo" and 0 < res.overall["NDCG@10"] < 1
    assert "pad-sasrec vs sasrec NDCG@10 on overall" in pad.compare()
    # items in items.csv that nobody interacted with are recommendable from their text
    tops = [set(pad.recommend(u, k=10).item_id) for u in ds.data.user_ids[:100]]
    assert sum(bool(t & set(held)) for t in tops) > 0
    # a brand-new item, added after training from its text alone, ranks near its closest title
    assert pad.add_items({"new-1": "Toy Story 3 (2010); Animation, Children's, Comedy"}) == 1
    recs = pad.recommend(["1"], k=20)  # 1 = Toy Story (1995)
    assert list(recs.columns) == ["item_id", "score", "title"] and len(recs) == 20
    assert "new-1" in set(recs.item_id)
    saved = pad.save(out / "saved")
    back = padrec.load_model(saved)
    again = back.recommend(["1"], k=20)
    assert again.item_id.tolist() == recs.item_id.tolist()
    np.testing.assert_allclose(again.score.to_numpy(), recs.score.to_numpy(), rtol=1e-5)
    assert back.evaluate().overall["NDCG@10"] == pytest.approx(res.overall["NDCG@10"])  # new-1 was never a target


def test_baseline_facade_and_errors(own, tmp_path):
    ds = padrec.load("ml-100k")
    pop = padrec.Pop().fit(ds)
    assert pop.recommend(["50"], k=3).item_id.tolist()[0] != "50"  # history excluded
    with pytest.raises(ValueError, match=r"cannot score items it was not trained on: use padrec\.PAD"):
        pop.add_items({"x": "text"})
    with pytest.raises(RuntimeError, match=r"call fit\(\) or padrec.load_model\(\) first"):
        padrec.SASRec().recommend(["1"])
    with pytest.raises(FileNotFoundError, match="not a saved padrec model"):
        padrec.load_model(tmp_path)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    """The README's first Python block, as written, on `padrec data export`'s files (settings made fast)."""
    import re
    from pathlib import Path

    from typer.testing import CliRunner

    from padrec.cli import app

    needs_data("ml-100k")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(import padrec.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    export = re.search(r"`(padrec data export [^`]+)`", code).group(1).split()[1:]
    assert CliRunner().invoke(app, export).exit_code == 0
    few = "max_epochs=1, limit_train_batches=3"
    fast = f"{few}, backbone=padrec.SASRec(max_len=20, {few})"
    code = code.replace('backbone="sasrec", ', "").replace("max_epochs=20", fast)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "pad on interactions (test), protocol full-loo" in out and "pad-sasrec vs sasrec NDCG@10" in out
    assert (tmp_path / "runs" / "mypad" / "model.pt").is_file()
