"""PALR's fast verbalizer ranking on the real SmolLM2-135M-Instruct (the packaged GGUF, no stand-ins): only the
last position's logits, batches ordered by length, and bfloat16 weights kept apart in the ranking cache."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch
from conftest import needs_data

from padrec.palr.config import PALRConfig
from padrec.palr.lm import CausalLM, label_token_ids, next_token_logits
from padrec.palr.pipeline import evaluate_palr, ranking_cache_path, ranking_lm
from padrec.palr.prompts import VERBALIZER_PREFIX
from padrec.train.config import ConfigError

LABELS = list("ABCDEF")
PROMPTS = [
    "Answer with one letter. Which is a fruit? [A] chair [B] apple [C] car [D] shoe [E] lamp [F] door",
    "Pick one.",
    "Answer with one letter. A user watched Toy Story, Aladdin and The Lion King. Which film fits them best? "
    "[A] Scream [B] Heat [C] Pocahontas [D] Casino [E] Seven [F] Fargo",
    "Which letter comes first in the alphabet? [A] A [B] F [C] E [D] D [E] C [F] B",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def texts(smollm2) -> list[str]:
    return [smollm2.wrap(p) + VERBALIZER_PREFIX for p in PROMPTS]


def _bf16(lm: CausalLM) -> CausalLM:
    return ranking_lm(CausalLM(copy.deepcopy(lm.model), lm.tokenizer, lm.spec), PALRConfig(lm_dtype="bfloat16"))


def test_only_the_last_position_reaches_the_lm_head_with_the_same_numbers(smollm2, texts):
    ids = label_token_ids(smollm2, LABELS, VERBALIZER_PREFIX)
    rows: list[int] = []
    hook = smollm2.model.lm_head.register_forward_hook(lambda m, i, o: rows.append(o.shape[1]))
    try:
        fast = next_token_logits(smollm2, texts[:2], ids, batch_size=1)
    finally:
        hook.remove()
    assert rows == [1, 1]  # logits_to_keep=1 was passed: one position projected per prompt, not the whole prompt
    with torch.inference_mode():
        full = [smollm2.model(torch.tensor([smollm2.encode(t)])).logits[0, -1].log_softmax(-1) for t in texts[:2]]
    assert len(smollm2.encode(texts[0])) > 20
    np.testing.assert_allclose(fast, np.stack([f[ids].numpy() for f in full]), atol=1e-4)
    assert np.isfinite(fast).all() and (np.exp(fast).sum(1) < 1).all()  # a part of each next-token distribution


def test_batches_are_ordered_by_length_and_rows_come_back_in_the_callers_order(smollm2, texts):
    ids = label_token_ids(smollm2, LABELS, VERBALIZER_PREFIX)
    lengths = [len(smollm2.encode(t)) for t in texts]
    assert sorted(lengths) != lengths and len(set(lengths)) == len(lengths)  # the test needs an unsorted mix
    shapes: list[tuple[int, ...]] = []

    def seen(module, args, kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))

    hook = smollm2.model.register_forward_pre_hook(seen, with_kwargs=True)
    try:
        by_length = next_token_logits(smollm2, texts, ids, batch_size=2)
        sorted_shapes, shapes[:] = list(shapes), []
        as_given = next_token_logits(smollm2, texts, ids, batch_size=2, by_length=False)
    finally:
        hook.remove()
    one_by_one = np.concatenate([next_token_logits(smollm2, [t], ids, batch_size=1) for t in texts])
    np.testing.assert_allclose(by_length, as_given, atol=1e-4)
    np.testing.assert_allclose(by_length, one_by_one, atol=1e-4)
    s = sorted(lengths)
    assert sorted_shapes == [(2, s[1]), (2, s[3])]  # the two shortest together, then the two longest
    assert sum(a * b for a, b in sorted_shapes) < sum(a * b for a, b in shapes)  # fewer padded tokens computed


def test_bfloat16_ranking_scores_are_close_and_keep_the_pick(smollm2, texts):
    ids = label_token_ids(smollm2, LABELS, VERBALIZER_PREFIX)
    half = _bf16(smollm2)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert next(smollm2.model.parameters()).dtype == torch.float32  # the cast copy left the original alone
    a = next_token_logits(smollm2, texts, ids, batch_size=4)
    b = next_token_logits(half, texts, ids, batch_size=4)
    assert not np.array_equal(a, b)  # bf16 really ran
    assert np.abs(a - b).max() < 0.2
    # the head projects in float32: no label scores tied by bf16 rounding of the logits (steps of ~0.06)
    assert all(len(np.unique(row)) == len(ids) for row in b)
    top2 = np.sort(a, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.2  # where float32's pick leads by more than bf16's error, bf16 keeps it
    assert clear.sum() >= 2 and (a.argmax(1) == b.argmax(1))[clear].all()


def test_bfloat16_rankings_get_their_own_cache_and_a_mismatch_is_refused(smollm2, tmp_path):
    from padrec.data.registry import load_dataset
    from padrec.data.split import leave_one_out
    from padrec.models.simple import Pop
    from padrec.palr.prompts import ItemCatalog

    needs_data("ml-100k")
    split = leave_one_out(load_dataset("ml-100k"))
    pop = Pop().fit(split)
    catalog = ItemCatalog.from_dataset(split.dataset, "title_year")
    opts = {"mode": "verbalizer", "n_candidates": 6, "n_recommend": 3, "max_users": 2, "max_history": 5,
            "retriever": "pop", "progress": False, "item_format": "title_year"}  # fmt: skip
    c32, c16 = PALRConfig(**opts), PALRConfig(**opts, lm_dtype="bfloat16")
    with pytest.raises(ConfigError, match="lm_dtype=bfloat16 but the language model passed has float32 weights"):
        evaluate_palr(split, c16, smollm2, "palr-v", retriever=pop)
    half = _bf16(smollm2)
    p32 = ranking_cache_path(tmp_path, split, c32, smollm2, "palr-v", "test", catalog)
    p16 = ranking_cache_path(tmp_path, split, c16, half, "palr-v", "test", catalog)
    # a float32 model under the bf16 option (or the reverse) is keyed apart from both honest pairs
    odd = ranking_cache_path(tmp_path, split, c32, half, "palr-v", "test", catalog)
    assert len({p32, p16, odd}) == 3
    e32 = evaluate_palr(split, c32, smollm2, "palr-v", run_dir=tmp_path, retriever=pop)
    e16 = evaluate_palr(split, c16, half, "palr-v", run_dir=tmp_path, retriever=pop)
    assert p32.is_file() and p16.is_file()
    assert len(p32.read_text().splitlines()) == len(p16.read_text().splitlines()) == 2
    assert "(bfloat16)" in e16.note and "(bfloat16)" not in e32.note
    assert e16.palr["model_items"] == e32.palr["model_items"] == 6 and e16.palr["resumed_users"] == 0
    again = evaluate_palr(split, c16, half, "palr-v", run_dir=tmp_path, retriever=pop)
    assert again.palr["resumed_users"] == 2 and again.results.overall == e16.results.overall


def test_cli_evaluate_ranks_in_bfloat16_when_asked(smollm2, tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from padrec.palr.cli import register

    needs_data("ml-100k")
    app = typer.Typer()
    app.command()(lambda: None)  # a second command keeps "palr" a sub-command
    register(app)
    args = ["palr", "evaluate", "--dataset", "ml-100k", "--run-dir", str(tmp_path), "--retriever", "pop",
            "--zero-shot", "--mode", "verbalizer", "--max-users", "2", "n_candidates=5", "max_history=5",
            "progress=false", "lm_dtype=bfloat16", "--json"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert "lm: smollm2 (bfloat16)" in out["note"] and out["palr"]["model_items"] == 10
    assert len(list((tmp_path / "eval").glob("palr-zeroshot-verbalizer-test.ranking-*.jsonl"))) == 1
    bad = CliRunner().invoke(app, [*args[:-2], "lm_dtype=float16", "--json"])
    assert bad.exit_code == 2 and "lm_dtype" in bad.output and "bfloat16" in bad.output
