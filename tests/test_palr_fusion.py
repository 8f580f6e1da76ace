"""PALR fused with its retriever (padrec/palr/fusion.py): the fusion rule on hand-computed numbers, then one small
run with the real SmolLM2-135M-Instruct on ml-100k (verbalizer ranking, Pop candidates, a few users): the weight is
chosen on validation users only, test users are ranked by the LM once, w=0 is the retriever and w=1 pure PALR."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from padrec.palr.config import PALRConfig, load_palr_config
from padrec.palr.fusion import GRID, choose_weight, fused_order, zscores
from padrec.palr.lm import CausalLM
from padrec.train.config import ConfigError

S = math.sqrt(2 / 3)  # population standard deviation of [1, 2, 3]


# -- the fusion rule, by hand ----------------------------------------------------------------------------------
def test_zscores_standardise_within_the_list():
    np.testing.assert_allclose(zscores([1.0, 2.0, 3.0]), [-1 / S, 0.0, 1 / S])
    np.testing.assert_allclose(zscores([-12.0, -10.0, -11.0]), [-1 / S, 1 / S, 0.0])  # scale and offset drop out
    np.testing.assert_array_equal(zscores([5.0, 5.0]), [0.0, 0.0])  # constant list: no information
    np.testing.assert_array_equal(zscores([7.0]), [0.0])
    # -inf (and NaN) go one range below the lowest, +inf one above the highest: [0, -2, 2] and [0, 4, 2, -2]
    np.testing.assert_allclose(zscores([0.0, -np.inf, 2.0]), [0.0, -1 / S, 1 / S])
    np.testing.assert_allclose(zscores([0.0, np.inf, 2.0, np.nan]), (np.array([0, 4, 2, -2]) - 1) / math.sqrt(5))


def test_fused_order_weights_ties_and_the_two_ends():
    cands = [11, 22, 33]
    lm, retr = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]  # z(lm) = -z(retriever) = [-1/S, 0, 1/S]
    assert fused_order(cands, lm, retr, 0.0) == [11, 22, 33]  # the retriever's order
    assert fused_order(cands, lm, retr, 1.0) == [33, 22, 11]  # the LM's order
    assert fused_order(cands, lm, retr, 0.4) == [11, 22, 33]  # fused = -0.2 z(lm): the retriever still leads
    assert fused_order(cands, lm, retr, 0.6) == [33, 22, 11]  # fused = 0.2 z(lm)
    assert fused_order(cands, lm, retr, 0.5) == [11, 22, 33]  # every fused score is 0: ties keep retriever order
    # raw scales do not matter: a retriever 1000x wider does not drown the LM at w=0.6
    assert fused_order(cands, lm, [3000.0, 2000.0, 1000.0], 0.6) == [33, 22, 11]
    # hand-computed mix: lm z = [0, 1/S, -1/S], retriever z = [1/S, 0, -1/S]; w=0.3 -> [0.7, 0.3, -1] / S
    assert fused_order(cands, [2.0, 3.0, 1.0], [3.0, 2.0, 1.0], 0.3) == [11, 22, 33]
    # w=0.8 -> [0.2, 0.8, -1] / S: the LM's favourite overtakes the retriever's
    assert fused_order(cands, [2.0, 3.0, 1.0], [3.0, 2.0, 1.0], 0.8) == [22, 11, 33]
    # equal LM scores at w=1 keep the retriever's order, exactly as pure PALR's lexsort does
    assert fused_order([5, 6, 7, 8], [0.0, -1.0, 0.0, -1.0], [4.0, 3.0, 2.0, 1.0], 1.0) == [5, 7, 6, 8]
    with pytest.raises(ValueError, match=r"fusion weight must be in \[0, 1\], got 1.5"):
        fused_order(cands, lm, retr, 1.5)
    with pytest.raises(ValueError, match="3 candidates, 2 LM scores, 3 retriever scores"):
        fused_order(cands, lm[:2], retr, 0.5)


def test_weight_choice_is_the_best_validation_score_ties_to_the_larger_weight():
    assert GRID == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert choose_weight({0.0: 0.1, 0.3: 0.25, 0.6: 0.2, 1.0: 0.05}) == 0.3
    assert choose_weight({0.0: 0.1, 0.3: 0.25, 0.6: 0.25, 1.0: 0.05}) == 0.6
    with pytest.raises(ValueError, match="no weights were scored"):
        choose_weight({})


def test_fusion_options_are_validated():
    cfg = load_palr_config("ml-100k", {"fusion": True, "fusion_users": 50, "mode": "verbalizer"})
    assert cfg.fusion and cfg.fusion_users == 50
    assert not PALRConfig().fusion and PALRConfig().fusion_users == 100  # off by default
    assert load_palr_config("ml-100k", {"fusion": True, "fusion_users": None}).fusion_users is None
    with pytest.raises(ConfigError, match="fusion=true needs a score per candidate: use mode=likelihood"):
        load_palr_config("ml-100k", {"fusion": True, "mode": "generation"})
    with pytest.raises(ConfigError, match="evaluated with stage=test only"):
        load_palr_config("ml-100k", {"fusion": True, "stage": "valid"})
    with pytest.raises(ConfigError, match=r"fusion_users: Input should be greater than or equal to 1, got 0"):
        load_palr_config("ml-100k", {"fusion_users": 0})
    with pytest.raises(ConfigError, match=r"fusion: Input should be a valid boolean"):
        load_palr_config("ml-100k", {"fusion": "sometimes"})


# -- a real run: SmolLM2 on ml-100k --------------------------------------------------------------------------------
LABEL = "palr-zeroshot-verbalizer"  # what `padrec palr evaluate --zero-shot --mode verbalizer` writes
OPTS = dict(
    mode="verbalizer", retriever="pop", item_format="title_year", n_candidates=20, n_recommend=10, max_history=5,
    max_users=4, fusion=True, fusion_users=8, verbalizer_batch=4, progress=False,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split(ml100k_split):
    return ml100k_split


class _Rows:
    """Counts the prompts the LM reads (rows of every forward pass)."""

    def __init__(self, lm: CausalLM) -> None:
        self.lm, self.n = lm, 0

    def __enter__(self) -> _Rows:
        def seen(module, args, kwargs):
            self.n += int(kwargs["input_ids"].shape[0])

        self.hook = self.lm.model.register_forward_pre_hook(seen, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self.hook.remove()


@pytest.fixture(scope="module")
def run(split, smollm2, tmp_path_factory):
    from padrec.models.simple import Pop
    from padrec.palr.pipeline import evaluate_palr

    run_dir = tmp_path_factory.mktemp("palr-fusion")
    pop = Pop().fit(split)
    with _Rows(smollm2) as rows:
        ev = evaluate_palr(split, PALRConfig(**OPTS), smollm2, LABEL, run_dir=run_dir, retriever=pop)
    return ev, rows.n, run_dir, pop


def test_the_weight_is_chosen_on_validation_users_and_test_users_are_ranked_once(run, split):
    from padrec.palr.retrieval import sample_users

    ev, rows, run_dir, _ = run
    fu = ev.fusion
    assert fu is not None and ev.results.n_users == 4 and fu.valid_users == 8
    # every test user and every validation user was read by the LM exactly once: the fused test row is made
    # from the scores the test ranking stored, with no second LM pass
    assert rows == 4 + 8
    assert set(ev.scores) == {int(u) for u in sample_users(split, 4, 0, "test").users("test")}
    assert all(len(r["candidates"]) == len(r["lm"]) == len(r["retriever"]) == 20 for r in ev.scores.values())
    # the chosen weight is the argmax of the validation grid (ties: the larger weight); the grid is not flat here,
    # so the choice is a real one
    assert list(fu.grid) == list(GRID)
    best = max(fu.grid.values())
    assert fu.weight == max(w for w, v in fu.grid.items() if v == best)
    assert len(set(fu.grid.values())) > 1
    # the grid's two ends are the retriever and pure PALR on the same validation users
    assert fu.grid[0.0] == pytest.approx(fu.valid_reference["retriever"], abs=1e-12)
    assert fu.grid[1.0] == pytest.approx(fu.valid_reference["palr"], abs=1e-12)
    valid = json.loads((run_dir / "eval" / f"{LABEL}-valid.json").read_text())
    assert valid["results"]["stage"] == "valid" and valid["results"]["n_users"] == 8
    # its own row beside pure PALR's (unchanged) and the retriever's, with the weight and the grid recorded
    palr, retr, fused = ev.records()
    assert retr["model"] == "pop" and "Recall@20" in retr["metrics"]
    assert fused["model"] == f"{LABEL}-fusion" and fused["stage"] == "test" and palr["model"] == LABEL
    assert fused["metrics"]["fusion_weight"] == fu.weight and fused["metrics"]["valid_NDCG@10"] == best
    assert f"w = {fu.weight:g} chosen by NDCG@10 on 8 validation users" in fused["note"]
    assert "valid NDCG@10 by w: 0: " in fused["note"] and "never test users" in fused["note"]
    saved = json.loads((run_dir / "eval" / f"{LABEL}-test.json").read_text())
    assert saved["fusion"]["weight"] == fu.weight and len(saved["fusion"]["valid_grid"]) == 11
    assert saved["results"] == ev.results.to_dict()  # pure PALR's result is where it was
    assert f"{LABEL}-fusion" in ev.table()


def test_the_two_ends_reproduce_the_retriever_and_pure_palr_on_test_users(run, split):
    from padrec.eval.evaluator import Evaluator
    from padrec.palr.fusion import FusionRanker
    from padrec.palr.retrieval import sample_users

    ev, _, _, pop = run
    sub = sample_users(split, 4, 0, "test")
    weights = {0.0, 1.0, ev.fusion.weight}
    at = {w: Evaluator(sub).run(FusionRanker(pop, ev.scores, w, "f").fit(split), "test") for w in weights}
    assert at[0.0].overall == ev.retriever.overall and at[0.0].groups == ev.retriever.groups
    assert at[1.0].overall == ev.results.overall and at[1.0].groups == ev.results.groups
    assert ev.fusion.results.overall == at[ev.fusion.weight].overall  # the row is the stored scores, fused


def test_a_rerun_reuses_the_cache_and_an_older_cache_without_scores_still_resumes(run, split, smollm2):
    from padrec.palr.pipeline import evaluate_palr, ranking_cache_path
    from padrec.palr.profile import read_jsonl
    from padrec.palr.prompts import ItemCatalog

    ev, _, run_dir, pop = run
    cfg = PALRConfig(**OPTS)
    catalog = ItemCatalog.from_dataset(split.dataset, "title_year")
    # fusion options are not ranking options: the cache digest is the one a run without fusion has
    plain = PALRConfig(**{**OPTS, "fusion": False, "fusion_users": 100})
    path = ranking_cache_path(run_dir, split, cfg, smollm2, LABEL, "test", catalog)
    assert path == ranking_cache_path(run_dir, split, plain, smollm2, LABEL, "test", catalog)
    recs = read_jsonl(path)
    assert len(recs) == 4 and all(len(r["lm_scores"]) == len(r["retriever_scores"]) == 20 for r in recs)
    with _Rows(smollm2) as rows:
        again = evaluate_palr(split, cfg, smollm2, LABEL, run_dir=run_dir, retriever=pop)
    assert rows.n == 0 and again.palr["resumed_users"] == 4 and again.fusion.valid_resumed_users == 8
    same = lambda f: {k: v for k, v in f.to_dict().items() if k != "valid_resumed_users"}  # noqa: E731
    assert same(again.fusion) == same(ev.fusion) and ev.fusion.valid_resumed_users == 0
    # a cache written before scores were kept: records without them
    for log in (run_dir / "eval").glob(f"{LABEL}-*.ranking-*.jsonl"):
        old = [{k: v for k, v in r.items() if k not in ("candidates", "lm_scores", "retriever_scores")}
               for r in read_jsonl(log)]  # fmt: skip
        log.write_text("".join(json.dumps(r) + "\n" for r in old))
    with _Rows(smollm2) as rows:  # pure PALR resumes from it as before, no LM call
        pure = evaluate_palr(split, plain, smollm2, LABEL, run_dir=run_dir, retriever=pop)
    assert rows.n == 0 and pure.palr["resumed_users"] == 4 and pure.fusion is None
    assert pure.results.overall == ev.results.overall
    with _Rows(smollm2) as rows:  # fusion ranks those users again to get their scores, and says so
        fused = evaluate_palr(split, cfg, smollm2, LABEL, run_dir=run_dir, retriever=pop)
    assert rows.n == 4 + 8 and fused.palr["rescored_users"] == 4 and fused.palr["resumed_users"] == 0
    assert fused.fusion.weight == ev.fusion.weight and fused.results.overall == ev.results.overall
    assert fused.fusion.results.overall == pytest.approx(ev.fusion.results.overall, abs=1e-12)


def test_cli_evaluate_reports_the_fused_row(run):
    import typer
    from typer.testing import CliRunner

    from padrec.palr.cli import register

    ev, _, run_dir, _ = run
    app = typer.Typer()
    app.command()(lambda: None)  # a second command keeps "palr" a sub-command
    register(app)
    args = ["palr", "evaluate", "--dataset", "ml-100k", "--run-dir", str(run_dir), "--retriever", "pop",
            "--zero-shot", "--mode", "verbalizer", "--max-users", "4", "n_candidates=20", "max_history=5",
            "verbalizer_batch=4", "fusion=true", "fusion_users=8", "progress=false", "--json"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["fusion"]["weight"] == ev.fusion.weight and out["fusion"]["results"]["model"] == f"{LABEL}-fusion"
    assert out["palr"]["users"] == 4
    bad = CliRunner().invoke(app, [("generation" if a == "verbalizer" else a) for a in args])
    assert bad.exit_code == 2 and "fusion=true needs a score per candidate" in bad.output


def test_the_run_report_shows_the_fused_row_and_its_weight(run, split, tmp_path):
    from padrec.eval.runreport import palr_report

    ev = run[0]
    text = palr_report(tmp_path, split.dataset, ev).read_text()
    head = next(line for line in text.splitlines() if line.startswith("| group "))
    overall = next(line for line in text.splitlines() if line.startswith("| overall "))
    column = [c.strip() for c in head.split("|")].index(f"{LABEL}-fusion NDCG@10")
    assert overall.split("|")[column].strip() == f"{ev.fusion.results.overall['NDCG@10']:.4f}"
    assert f"w = {ev.fusion.weight:g} chosen by NDCG@10" in text
