"""Run reports (RUN/report.md), readable per-bin plots, and MLflow logging: real trainings, real files."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_data
from test_pad import FAST, toy  # noqa: F401  (the PAD toy dataset fixture)
from test_palr_lm import catalog, tiny_dir  # noqa: F401  (a random tiny Llama saved as an HF folder)
from typer.testing import CliRunner

from padrec.cli import app
from padrec.eval import runreport
from padrec.eval.plots import PALETTE, baselines_of, plot_groups, select_series
from padrec.eval.results import Results
from padrec.train.trainer import read_metrics

runner = CliRunner()
SHORT = ["max_epochs=2", "limit_train_batches=3", "model.max_len=20", "progress=false"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _row(text: str, first_cell: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _header(text: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("| group |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real two-epoch SASRec training on ml-100k through the CLI (report written at its end)."""
    needs_data("ml-100k")
    run = tmp_path_factory.mktemp("report") / "run"
    args = ["train", "--model", "sasrec", "--dataset", "ml-100k", "--run-dir", str(run), *SHORT, "logger=csv"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return run


def test_train_report_has_every_section_and_the_metrics_json_numbers(trained):
    text = (trained / "report.md").read_text()
    for section in ("# sasrec on ml-100k", "## Results", "## Training", "## Data", "## Config"):
        assert section in text, section
    metrics = json.loads((trained / "metrics-full-loo-test.json").read_text())
    assert metrics["protocol"] == "full-loo" and "Protocol `full-loo`" in text
    head = _header(text)
    for group in ("overall", "bin1", "cold", "warm"):
        row = dict(zip(head, _row(text, group), strict=True))
        src = metrics["overall"] if group == "overall" else metrics["groups"][group]
        for m in ("HR@10", "NDCG@10", "MRR@10"):
            assert row[m] == f"{src[m]:.4f}", (group, m)
        users = metrics["n_users"] if group == "overall" else src["users"]
        assert row["users"] == f"{int(users):,}"
    # data statistics are the prepared dataset's
    assert _row(text, "users")[1] == "943" and _row(text, "interactions")[1] == "100,000"
    assert _row(text, "median history length")[1] == "65"
    # the training table agrees with train.json and with the CSV log the curve is drawn from
    summary = json.loads((trained / "train.json").read_text())
    train_row = _row(text, "train")
    assert train_row[1] == "2" and train_row[2] == str(summary["best_epoch"])
    assert train_row[3] == f"{summary['val_ndcg10']:.4f}"
    logged = read_metrics(trained)
    assert float(train_row[4]) == pytest.approx(logged["train_loss_epoch"].dropna().iloc[-1], abs=1e-4)
    # the run's own config file, as written
    assert "max_epochs: 2" in text and "limit_train_batches: 3" in text
    # the pictures exist beside it and are linked by relative name
    assert "![per-bin results](bins.png)" in text and "![training curve](curve.png)" in text
    assert _png_size(trained / "curve.png")[0] > 500 and _png_size(trained / "bins.png")[0] > 500


def test_epoch_curve_has_one_loss_and_one_ndcg_per_epoch(trained):
    curve = runreport.epoch_curve(trained)
    assert list(curve["epoch"]) == [0, 1]
    logged = read_metrics(trained).dropna(subset=["val_ndcg10"])
    assert np.allclose(curve["val_ndcg10"], logged["val_ndcg10"])
    assert curve["train_loss"].notna().all()


def test_report_without_matplotlib_keeps_the_tables_and_links_no_picture(trained, tmp_path, monkeypatch):
    from padrec.data.registry import load_dataset

    monkeypatch.setattr(runreport, "_can_plot", lambda: False)
    res = Results.from_json((trained / "metrics-full-loo-test.json").read_text())
    out = runreport.train_report(trained, load_dataset("ml-100k"), res)
    text = out.read_text()
    assert "![" not in text and runreport.NO_PLOT in text
    row = dict(zip(_header(text), _row(text, "overall"), strict=True))
    assert row["NDCG@10"] == f"{res.overall['NDCG@10']:.4f}"
    assert not list(trained.glob(".*report*"))  # written atomically: no temp file left behind


def test_pad_report_compares_with_the_backbone_and_draws_one_curve_per_stage(toy, tmp_path):  # noqa: F811
    from padrec.pad.pipeline import run_pad

    split, text_vectors = toy
    fast = {**FAST, "backbone.max_epochs": 2, "max_epochs": 2}
    out = run_pad(split, tmp_path / "pad", overrides=fast, text=text_vectors)
    report = runreport.pad_report(out.run_dir, split.dataset, out.results)
    text = report.read_text()
    head = _header(text)
    assert "sasrec NDCG@10" in head and "pad-sasrec NDCG@10" in head and "pad-sasrec vs sasrec NDCG@10" in head
    row = dict(zip(head, _row(text, "overall"), strict=True))
    base, pad = out.results["sasrec"].overall["NDCG@10"], out.results["pad-sasrec"].overall["NDCG@10"]
    assert row["pad-sasrec NDCG@10"] == f"{pad:.4f}"
    assert row["pad-sasrec vs sasrec NDCG@10"] == f"{100 * (pad / base - 1):+.1f}%"
    for stage in ("pretrain", "align", "pad"):
        assert _row(text, stage)[1] == "2"  # two epochs each, from the stage's own train.json
        assert f"`{stage}/config.yaml`" in text
    # three stages: three rows of panels, so the curve is taller than a single run's
    assert _png_size(out.run_dir / "curve.png")[1] > 700


def test_palr_run_report_puts_palr_next_to_its_retriever(tiny_dir, tmp_path):  # noqa: F811
    needs_data("ml-100k")
    run = tmp_path / "palr"
    args = ["palr", "run", "--dataset", "ml-100k", "--run-dir", str(run), "--lm", str(tiny_dir), "--retriever", "pop"]
    small = ["user_fraction=0.01", "max_steps=3", "n_candidates=5", "train_candidates=6", "progress=false"]
    res = runner.invoke(app, [*args, "--max-users", "4", *small])
    assert res.exit_code == 0, res.output
    text = (run / "report.md").read_text()
    saved = json.loads((run / "eval" / "palr-v2-test.json").read_text())
    head = _header(text)
    row = dict(zip(head, _row(text, "overall"), strict=True))
    assert row["users"] == "4" and "Protocol `full-loo`" in text
    assert row["palr-v2 NDCG@10"] == f"{saved['results']['overall']['NDCG@10']:.4f}"
    assert row["pop NDCG@10"] == f"{saved['retriever']['overall']['NDCG@10']:.4f}"
    assert f"hallucination rate {saved['palr']['hallucination_rate']:.4f}" in text
    assert "`config.json`" in text and "## Data" in text
    assert _row(text, "finetune")[0] == "finetune" and (run / "curve.png").is_file()


# -- plots --------------------------------------------------------------------------------------------------
def _series(n: int) -> dict[str, dict[str, float]]:
    """A backbone at 0.10 and n-1 variants at 0.10 + k%, over three groups."""
    out = {"backbone": {"overall": 0.10, "cold": 0.02, "bin1": 0.3}}
    for k in range(1, n):
        out[f"v{k}"] = {"overall": 0.10 * (1 + k / 100), "cold": 0.02 * (1 - k / 100), "bin1": 0.3}
    return out


def test_select_series_keeps_baselines_and_chosen_then_the_largest_gains():
    series = _series(12)
    picked = select_series(series, n=6, keep=["v1"])
    assert picked == ["backbone", "v1", "v8", "v9", "v10", "v11"]  # caller's order kept
    assert select_series(series, n=20) == list(series)
    # a weaker backbone's variant is judged against its own backbone, not the stronger one
    two = {"a": {"overall": 0.2}, "a+": {"overall": 0.21}, "b": {"overall": 0.1}, "b+": {"overall": 0.13}}
    assert select_series(two, n=3, baseline={"a+": "a", "b+": "b"}) == ["a", "b", "b+"]
    with pytest.raises(ValueError, match="keep names unknown series nope"):
        select_series(series, keep=["nope"])
    with pytest.raises(ValueError, match="baseline 'zzz' is not one of the series"):
        baselines_of(list(series), "zzz")


def test_plot_groups_draws_at_most_max_series_and_a_relative_panel(tmp_path):
    from matplotlib.image import imread

    many = plot_groups(_series(12), tmp_path / "many.png", title="t")
    alone = plot_groups({"backbone": _series(1)["backbone"]}, tmp_path / "one.png")
    flat = plot_groups(_series(12), tmp_path / "flat.png", relative=False)
    # the relative-change panel makes the figure taller; one series has nothing to compare with
    assert _png_size(many)[1] > 1.5 * _png_size(alone)[1] and _png_size(flat)[1] < _png_size(many)[1]
    img = (imread(many)[..., :3] * 255).round().astype(int)
    colours = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in PALETTE}
    drawn = {tuple(p) for p in img.reshape(-1, 3)} & colours
    assert len(drawn) == 5  # five variants + the grey backbone: six series, five palette colours, none repeated


# -- MLflow -------------------------------------------------------------------------------------------------
def test_mlflow_logger_records_the_runs_params_and_validation_ndcg(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    needs_data("ml-100k")
    run, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "--model", "sasrec", "--dataset", "ml-100k", "--run-dir", str(run), *SHORT, "--no-evaluate"]
    res = runner.invoke(app, [*args, "logger=[csv,mlflow]", f"mlflow_uri={uri}", "lr=0.002"])
    assert res.exit_code == 0, res.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ml-100k")  # default experiment: the dataset's name
    (found,) = client.search_runs([exp.experiment_id])
    params = found.data.params
    assert params["model"] == "sasrec" and params["train/lr"] == "0.002" and params["params/max_len"] == "20"
    assert found.data.tags["padrec.run_dir"] == str(run.resolve()) and found.info.run_name == f"{tmp_path.name}/run"
    history = sorted(client.get_metric_history(found.info.run_id, "val_ndcg10"), key=lambda m: m.step)
    logged = read_metrics(run)["val_ndcg10"].dropna().to_list()
    assert [m.value for m in history] == pytest.approx(logged) and len(logged) == 2
    assert (run / "logs" / "run0" / "metrics.csv").is_file()  # the CSV log is kept alongside
    assert "## Training" in (run / "report.md").read_text()  # report without test results still written


def test_missing_mlflow_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    needs_data("ml-100k")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # how Python marks a package as not importable
    run = tmp_path / "run"
    res = runner.invoke(
        app, ["train", "--model", "sasrec", "--dataset", "ml-100k", "--run-dir", str(run), "logger=mlflow"]
    )
    assert res.exit_code == 2 and "pip install 'padrec[mlflow]'" in res.output
    assert not run.exists()  # failed before any work
