"""The command line as users run it: JSON outputs, the Pop reference rows, clear errors."""

from __future__ import annotations

import json

import pytest
from conftest import needs_data
from typer.testing import CliRunner

from padrec.cli import app

runner = CliRunner()


def _json(args: list[str]) -> dict:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_data_info_json_reports_raw_and_prepared_counts():
    needs_data("ml-1m")
    info = _json(["data", "info", "ml-1m", "--json"])
    assert (info["users"], info["items"], info["interactions"]) == (6040, 3706, 1000209)
    p = info["prepared"]
    assert (p["users"], p["items"], p["interactions"]) == (6040, 3416, 999611)


def test_pop_on_beauty_trains_on_training_counts_only():
    needs_data("amazon-beauty")
    out = _json(["evaluate", "--model", "pop", "--dataset", "amazon-beauty", "--json"])
    assert out["protocol"] == "full-loo"
    assert out["overall"]["HR@10"] == pytest.approx(0.0115, rel=0.05)
    assert out["overall"]["NDCG@10"] == pytest.approx(0.0055, rel=0.05)
    assert "cold" in out["groups"] and "bin1" in out["groups"]


def test_leaky_pop_reproduces_the_s3rec_row():
    needs_data("amazon-beauty")
    out = _json(["evaluate", "--model", "pop", "--dataset", "amazon-beauty", "--count-test", "--json"])
    assert out["model"] == "pop-leak"
    assert out["overall"]["HR@10"] == pytest.approx(0.0152, abs=0.0002)
    assert out["overall"]["NDCG@10"] == pytest.approx(0.0068, abs=0.0002)


def test_sampled_protocol_is_named():
    needs_data("ml-100k")
    out = _json(
        [
            "evaluate",
            "--model",
            "pop",
            "--dataset",
            "ml-100k",
            "--protocol",
            "sampled",
            "--sampler",
            "popularity",
            "--json",
        ]
    )
    assert out["protocol"] == "sampled100-popularity-loo"
    assert out["overall"]["HR@10"] > 0.1  # sampled numbers are much higher than full ranking


def test_train_recommend_and_errors(tmp_path):
    needs_data("ml-100k")
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "train",
            "--model",
            "sasrec",
            "--dataset",
            "ml-100k",
            "--run-dir",
            str(run),
            "max_epochs=1",
            "model.max_len=20",
            "progress=false",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (run / "model.pt").exists() and (run / "config.yaml").exists() and (run / "dataset.json").exists()
    recs = _json(["recommend", "--run", str(run), "--history", "50,172,133", "-k", "5", "--json"])
    assert len(recs) == 5 and all(r["item_id"] not in {"50", "172", "133"} for r in recs)
    assert all(r["title"] for r in recs)
    bad = runner.invoke(app, ["recommend", "--run", str(run), "--history", "50,nope,999999", "-k", "5"])
    assert bad.exit_code == 2 and "nope" in bad.output and "999999" in bad.output
    typo = runner.invoke(app, ["train", "--model", "sasrec", "--dataset", "ml-100k", "lrr=0.1"])
    assert typo.exit_code == 2 and "unknown config key 'lrr'" in typo.output
    unknown = runner.invoke(app, ["evaluate", "--model", "pop", "--dataset", "no-such-data"])
    assert unknown.exit_code == 2 and "ml-1m" in unknown.output  # lists the known names
