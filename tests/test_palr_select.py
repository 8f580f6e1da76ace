"""Model selection during PALR fine-tuning, on the real SmolLM2-135M-Instruct and ml-100k, sized for a CPU: nine
instruction examples, a few LoRA steps, four validation users ranked among five candidates (verbalizer mode, the
target forced in with upper_bound so NDCG@10 depends on the model's ranking, not on Pop's recall)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")


from padrec.palr.config import PALRConfig, load_palr_config
from padrec.palr.finetune import BEST_DIR, BEST_FILE, DONE_FILE, finetune, finetuned_path
from padrec.palr.lm import CausalLM, load_causal_lm, model_fingerprint
from padrec.palr.pipeline import build_data, check_finetune_stage, run_finetune, selection_score
from padrec.train.config import ConfigError

TINY = dict(
    lm="smollm2", retriever="pop", mode="verbalizer", tasks=("recommend_retrieval",), user_fraction=0.01,
    profile="none", item_format="title_year", max_history=3, label_len=2, train_candidates=5, n_candidates=5,
    n_recommend=5, upper_bound=True, max_seq_len=256, batch_size=1, max_epochs=100, checkpoint_every=2,
    select_every=2, select_users=4, accelerator="cpu", progress=False,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split(ml100k_split):
    return ml100k_split


@pytest.fixture(scope="module")
def data_dir(split, tmp_path_factory):
    """Instruction data built once (9 users, one labelled example each), copied into every run directory."""
    run = tmp_path_factory.mktemp("palr-data")
    meta, _ = build_data(split, run, PALRConfig(**TINY))
    assert meta["examples"] == 9
    return run / "data"


def _fresh(lm: CausalLM) -> CausalLM:
    """A copy of the base model: fine-tuning wraps the model it is given in LoRA layers."""
    return CausalLM(copy.deepcopy(lm.model), lm.tokenizer, lm.spec)


def _run(split, smollm2, data_dir, run_dir, **over):
    if not (run_dir / "data").exists():
        shutil.copytree(data_dir, run_dir / "data")
    cfg = PALRConfig(**{**TINY, **over})
    lm, summary, reused = run_finetune(split, run_dir, cfg, lm=_fresh(smollm2))
    assert not reused
    return cfg, lm, summary


def test_bad_selection_values_are_refused():
    with pytest.raises(ConfigError, match=r"select_every: Input should be greater than or equal to 0, got -1"):
        load_palr_config("ml-100k", {"select_every": -1})
    with pytest.raises(ConfigError, match=r"select_users: Input should be greater than or equal to 1, got 0"):
        load_palr_config("ml-100k", {"select_every": 2, "select_users": 0})
    with pytest.raises(ConfigError, match=r"select_patience: Input should be greater than or equal to 1, got 0"):
        load_palr_config("ml-100k", {"select_every": 2, "select_patience": 0})
    assert load_palr_config("ml-100k", {"select_every": 2, "select_users": None}).select_users is None  # all users
    assert PALRConfig().select_every == 0  # off by default: the last step's weights, as before
    with pytest.raises(ValueError, match="select_every=2 needs validation users to select on"):
        finetune(None, [{"prompt": "p", "answer": "a"}], PALRConfig(select_every=2), "unused")


def test_selection_keeps_the_best_adapter_and_a_resumed_run_continues_its_history(split, smollm2, data_dir, tmp_path):
    cfg, lm, summary = _run(split, smollm2, data_dir, tmp_path, max_steps=3, lr=5e-3)
    ft = tmp_path / "finetune"
    sel = summary["selection"]
    # every select_every=2 steps, and once more at the end (step 3): the last weights are a candidate too
    assert [e["step"] for e in sel["evaluations"]] == [2, 3]
    assert all(e["users"] == 4 for e in sel["evaluations"]) and summary["steps"] == 3 and not sel["stopped_early"]
    scores = [e["NDCG@10"] for e in sel["evaluations"]]
    assert sel["best_score"] == max(scores) and sel["best_step"] == [2, 3][scores.index(max(scores))]
    # the stage's result is the best adapter: finetuned_path, the summary and its marker agree
    assert finetuned_path(ft) == ft / BEST_DIR and summary["path"] == str(ft / BEST_DIR)
    assert json.loads((ft / BEST_DIR / BEST_FILE).read_text()) == {"step": sel["best_step"], "score": max(scores)}
    assert (ft / "adapter").is_dir() and summary["last_path"] == str(ft / "adapter")
    assert json.loads((ft / DONE_FILE).read_text())["selection"] == sel
    # ... the returned model has the best weights (not the last ones, unless the last step was the best) and ranks
    # the validation sample exactly as that evaluation did, in training
    assert model_fingerprint(lm) == model_fingerprint(load_causal_lm(str(ft / BEST_DIR)))
    assert (model_fingerprint(lm) == model_fingerprint(load_causal_lm(str(ft / "adapter")))) == (sel["best_step"] == 3)
    assert selection_score(split, cfg)(lm) == pytest.approx((sel["best_score"], 4), abs=1e-6)
    # a finished stage is not reused with other selection options
    with pytest.raises(ConfigError, match="other model-selection options"):
        check_finetune_stage(split, tmp_path, cfg.model_copy(update={"select_every": 0}))

    # kill-equivalent: the stage never finished (no finetune.json); last.ckpt holds step 3 and the selection state
    (ft / DONE_FILE).unlink()
    _, _, again = _run(split, smollm2, data_dir, tmp_path, max_steps=6, lr=5e-3)
    sel2 = again["selection"]
    assert again["resumed"] and again["steps"] == 6
    assert [e["step"] for e in sel2["evaluations"]] == [2, 3, 4, 6]
    assert sel2["evaluations"][:2] == sel["evaluations"]  # continued, not restarted
    all_scores = [e["NDCG@10"] for e in sel2["evaluations"]]
    assert sel2["best_score"] == max(all_scores) >= sel["best_score"]
    assert json.loads((ft / BEST_DIR / BEST_FILE).read_text())["step"] == sel2["best_step"]


def test_early_stopping_when_the_score_cannot_improve_and_a_resumed_stopped_run_stays_stopped(
    split, smollm2, data_dir, tmp_path, capsys
):
    # a learning rate of 1e-9 moves LoRA weights by ~1e-9: no ranking can change, so no evaluation improves on the
    # first one, and patience 1 stops training at the second evaluation (step 2 of 8)
    over = dict(max_steps=8, lr=1e-9, select_every=1, select_patience=1)
    _, _, summary = _run(split, smollm2, data_dir, tmp_path, **over, progress=True)
    sel = summary["selection"]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("finetune step")]
    score = f"{sel['best_score']:.4f}"
    assert lines == [
        f"finetune step 1: valid NDCG@10 {score} on 4 users (best {score} at step 1, saved)",
        f"finetune step 2: valid NDCG@10 {score} on 4 users (best {score} at step 1, stopping: 1 without improvement)",
    ]
    assert [e["step"] for e in sel["evaluations"]] == [1, 2]
    assert sel["evaluations"][0]["NDCG@10"] == sel["evaluations"][1]["NDCG@10"]  # the premise: the score is flat
    assert sel["stopped_early"] and summary["steps"] == 2 and sel["best_step"] == 1
    assert json.loads((tmp_path / "finetune" / BEST_DIR / BEST_FILE).read_text())["step"] == 1
    # resumed from the checkpoint of the evaluation that stopped it: it stays stopped, history unchanged
    (tmp_path / "finetune" / DONE_FILE).unlink()
    _, _, again = _run(split, smollm2, data_dir, tmp_path, **over)
    assert again["resumed"] and again["steps"] == 2 and again["selection"] == sel
