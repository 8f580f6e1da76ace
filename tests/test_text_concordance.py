"""Concordance of two item spaces (PAD's analysis): k-NN overlap and pair-similarity rank correlation.

The run-level test saves an *untrained* SASRec on ml-100k (random item table) and embeds titles with a
tiny random Llama built in tmp_path: it checks the plumbing (ids aligned, plot written, CLI), not numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import needs_data
from test_text import _tiny_model

from padrec.text import concordance, plot_concordance
from padrec.text.analysis import scalars


def _space(n=400, d=32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_identical_and_rotated_spaces_agree_fully():
    a = _space()
    same = concordance(a, a.copy(), k=10, sample=None)
    assert same["overlap_at_k"] == 1.0 and same["spearman"] == pytest.approx(1.0)
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((32, 32)))
    rotated = concordance(a, 3.0 * a @ q.astype(np.float32), k=10, sample=None)  # cosine ignores rotation, scale
    assert rotated["overlap_at_k"] > 0.99 and rotated["spearman"] > 0.999


def test_unrelated_space_overlaps_at_chance():
    a, b = _space(seed=0), _space(d=8, seed=1)
    res = concordance(a, b, k=10, sample=None, seed=3)
    assert res["overlap_random"] == pytest.approx(10 / 399)
    assert abs(res["overlap_at_k"] - res["overlap_random"]) < 0.01
    assert abs(res["spearman"]) < 0.02 and res["n_queries"] == 400


def test_sampling_is_deterministic_and_inputs_are_checked():
    a, b = _space(), _space(seed=2)
    one = concordance(a, b, k=5, sample=50, pairs=1000, seed=7)
    assert one == concordance(a, b, k=5, sample=50, pairs=1000, seed=7) and one["n_queries"] == 50
    with pytest.raises(ValueError, match="row-aligned"):
        concordance(a, b[:-1])
    with pytest.raises(ValueError, match="k=400"):
        concordance(a, b, k=400)


def test_plot_writes_a_png(tmp_path):
    a = _space()
    res = concordance(a, a + 0.5 * _space(seed=4), k=10, details=True)
    out = plot_concordance(res, tmp_path / "fig.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "overlap_per_query" not in scalars(res) and json.dumps(scalars(res))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    needs_data("ml-100k")
    from padrec.data.registry import load_dataset
    from padrec.models.sequential import SASRec

    ds = load_dataset("ml-100k")
    rec = SASRec(params={"d": 16, "n_layers": 1, "n_heads": 1, "max_len": 10})
    rec.item_ids = np.asarray(ds.item_ids, dtype=object)
    rec._build()
    run = tmp_path_factory.mktemp("run")
    rec.save(run)
    (run / "dataset.json").write_text(json.dumps({"dataset": "ml-100k", "data_dir": None}))
    return run


def test_cli_concordance_for_a_run(random_run, tiny_llama, tmp_path):
    import typer
    from typer.testing import CliRunner

    from padrec.text.cli import register

    app = typer.Typer()
    register(app)
    png = tmp_path / "concordance.png"
    args = ["analyze", "concordance", "--run", str(random_run), "--encoder", str(tiny_llama), "--k", "5"]
    out = CliRunner().invoke(app, [*args, "--sample", "300", "--pairs", "5000", "--out", str(png), "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["dataset"] == "ml-100k" and res["n_items"] <= 1682 and res["n_queries"] == 300
    assert 0.0 <= res["overlap_at_k"] <= 1.0 and res["plot"] == str(png) and png.stat().st_size > 1000
    text = CliRunner().invoke(app, [*args, "--sample", "100", "--pairs", "1000"])
    assert text.exit_code == 0 and "overlap@5" in text.output and "Spearman" in text.output
    missing = CliRunner().invoke(app, ["analyze", "concordance", "--run", str(tmp_path)])
    assert missing.exit_code == 2 and "not a saved run" in missing.output
