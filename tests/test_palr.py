"""PALR without a language model: prompts (snapshots), profiles, instruction data (no leak), output
mapping, the ranker's score layout and the CLI's data stage.

Everything here runs on a 12-movie toy dataset built in the test, or on ml-100k for the leakage check;
tests that need transformers live in ``test_palr_lm.py``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import needs_data

from padrec.data.dataset import from_sequences
from padrec.data.split import leave_one_out
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.models.simple import Pop, RandomRec
from padrec.palr.config import PALRConfig, load_palr_config
from padrec.palr.instructions import Cooccurrence, build_examples, build_instruction_data, read_examples
from padrec.palr.profile import ProfileStore, append_jsonl, parse_profile, read_jsonl, rule_based_profile
from padrec.palr.prompts import (
    LABELS,
    PROMPT_VERSION,
    ItemCatalog,
    answer_text,
    profile_prompt,
    profile_text,
    recommend_prompt,
    recommend_retrieval_prompt,
)
from padrec.palr.rank import PALRRanker, map_to_candidates, normalize_title, parse_generation
from padrec.palr.retrieval import candidate_recall, sample_users, top_candidates

MOVIES = {
    "m1": ("Toy Story (1995)", "Animation|Children's|Comedy", "1995"),
    "m2": ("Empire Strikes Back, The (1980)", "Action|Adventure|Sci-Fi", "1980"),
    "m3": ("Fargo", "Crime|Drama|Thriller", "1996"),  # no year in the title: rendering appends it
    "m4": ("Babe (1995)", "Children's|Comedy|Drama", "1995"),
    "m5": ("Alien (1979)", "Horror|Sci-Fi", "1979"),
    "m6": ("Heat (1995)", "Action|Crime|Thriller", "1995"),
    "m7": ("Casablanca (1942)", "Drama|Romance|War", "1942"),
    "m8": ("Vertigo (1958)", "Mystery|Thriller", "1958"),
    "m9": ("Aladdin (1992)", "Animation|Children's|Comedy|Musical", "1992"),
    "m10": ("Star Wars (1977)", "Action|Adventure|Sci-Fi", "1977"),
    "m11": ("Jumanji (1995)", "Adventure|Children's|Fantasy", "1995"),
    "m12": ("Se7en (1995)", "Crime|Thriller", "1995"),
}


def toy_movies(n_users: int = 12, name: str = "ml-toy"):
    """12 movies with titles/genres/years; user u watches every other movie starting at u."""
    ids = list(MOVIES)
    seqs = [list(dict.fromkeys(ids[(u + 2 * k) % len(ids)] for k in range(5 + u % 4))) for u in range(n_users)]
    table = pd.DataFrame(
        {
            "title": [v[0] for v in MOVIES.values()],
            "genres": [v[1] for v in MOVIES.values()],
            "year": [v[2] for v in MOVIES.values()],
        },
        index=ids,
    )
    return from_sequences(name, [f"u{u}" for u in range(n_users)], seqs, item_table=table)


@pytest.fixture
def toy():
    ds = toy_movies()
    return ds, ItemCatalog.from_dataset(ds)


# -- prompts -----------------------------------------------------------------------------------
def test_item_rendering_per_dataset(toy):
    ds, cat = toy
    assert cat.noun == "movie"
    assert cat.render(ds.item_index["m1"]) == "Toy Story (1995)"  # the year is not repeated
    assert cat.render(ds.item_index["m3"]) == "Fargo (1996)"  # the year is appended
    assert ItemCatalog.from_dataset(ds, "title").render(ds.item_index["m3"]) == "Fargo"
    assert ItemCatalog.from_dataset(ds, "id_title").render(ds.item_index["m3"]) == "m3 (Fargo)"
    beauty = from_sequences(
        "amazon-beauty", ["a", "b"], [["B1", "B2"], ["B2"]],
        item_table=pd.DataFrame({"title": ["OPI  Nail\nLacquer", ""]}, index=["B1", "B2"]),
    )  # fmt: skip
    bc = ItemCatalog.from_dataset(beauty)
    assert bc.noun == "product"
    assert bc.texts[1:] == ("OPI Nail Lacquer", "item B2")


def test_prompts_render_exactly(toy):
    _, cat = toy
    h = [1, 2, 3, 4]
    assert PROMPT_VERSION == "palr-prompts-1"
    assert profile_prompt(cat, h, k=3) == (
        "Here are the movies a user interacted with, oldest first:\n"
        "1. Toy Story (1995) [Animation, Children's, Comedy]\n"
        "2. Fargo (1996) [Crime, Drama, Thriller]\n"
        "3. Alien (1979) [Horror, Sci-Fi]\n"
        "4. Casablanca (1942) [Drama, Romance, War]\n"
        "\n"
        "Describe the user's preferences with at most 3 short keywords (a genre, theme, style or brand). "
        "For each keyword, give the numbers of the movies above that support it.\n"
        'Answer with one keyword per line, in the form "keyword: 1, 4".'
    )
    kws = rule_based_profile(cat, h, k=3, items_per_keyword=2)
    assert kws == [
        {"keyword": "Drama", "items": [4, 2]},
        {"keyword": "Romance", "items": [4]},
        {"keyword": "War", "items": [4]},
    ]
    profile = profile_text(cat, kws)
    assert profile == "Drama (Casablanca (1942); Fargo (1996)); Romance (Casablanca (1942)); War (Casablanca (1942))"
    assert recommend_prompt(cat, h, profile, n=3) == (
        "Task: recommend the next 3 movies this user will interact with.\n"
        f"User profile: {profile}\n"
        "The user's last 4 movies, oldest first:\n"
        "1. Toy Story (1995)\n"
        "2. Fargo (1996)\n"
        "3. Alien (1979)\n"
        "4. Casablanca (1942)\n"
        "\n"
        'Answer with 3 movie titles, best first, one per line, in the form "1. title".'
    )
    assert recommend_retrieval_prompt(cat, h, None, [5, 6, 7], n=2) == (
        "Task: choose the 2 movies this user is most likely to interact with next, from the candidates below.\n"
        "The user's last 4 movies, oldest first:\n"
        "1. Toy Story (1995)\n"
        "2. Fargo (1996)\n"
        "3. Alien (1979)\n"
        "4. Casablanca (1942)\n"
        "\n"
        "Candidates:\n"
        "- Aladdin (1992)\n"
        "- Empire Strikes Back, The (1980)\n"
        "- Babe (1995)\n"
        "\n"
        'Answer with 2 titles copied exactly from the candidates, best first, one per line, in the form "1. title".'
    )
    assert answer_text(cat, [5, 6]) == "1. Aladdin (1992)\n2. Empire Strikes Back, The (1980)"


# -- profiles ----------------------------------------------------------------------------------
def test_rule_based_profile_uses_title_words_without_attributes():
    ds = from_sequences(
        "amazon-x", ["a"], [["p1", "p2", "p3"]],
        item_table=pd.DataFrame(
            {"title": ["OPI Nail Polish Red", "Essie Nail Polish", "Nivea Face Cream"]}, index=["p1", "p2", "p3"]
        ),
    )  # fmt: skip
    cat = ItemCatalog.from_dataset(ds)
    kws = rule_based_profile(cat, [1, 2, 3], k=2, items_per_keyword=3)
    assert [k["keyword"] for k in kws] == ["nail", "polish"]  # ties: most recent, then alphabetical
    assert kws[0]["items"] == [2, 1]  # most recent supporting item first


def test_parse_profile_links_keywords_to_history_items():
    text = "Here you go:\n1. Sci-fi: 1, 3\n- **Family films**: 2 and 9\ncomedy - 2\nnonsense line\nFargo: 2\n"
    out = parse_profile(text, [10, 20, 30], k=5, titles=["Alien (1979)", "Fargo (1996)", "Heat (1995)"])
    assert out == [
        {"keyword": "Sci-fi", "items": [10, 30]},
        {"keyword": "Family films", "items": [20]},  # 9 is outside the history: dropped
        {"keyword": "comedy", "items": [20]},
    ]  # "Fargo" only repeats a history title: not a preference


def test_profile_store_is_resumable_and_labels_its_source(tmp_path, toy):
    _ds, cat = toy
    path = tmp_path / "profiles.jsonl"
    store = ProfileStore(path, cat)
    answers = iter(["Crime: 2", "no keywords here", "Drama: 1, 2"])
    made = store.ensure([0, 1, 2], [[1, 2], [3, 4], [5, 6]], generate=lambda ps: [next(answers) for _ in ps],
                        lm_name="fake", batch_size=2, progress=False)  # fmt: skip
    assert made == 3
    recs = read_jsonl(path)
    assert [r["source"] for r in recs] == ["lm", "rule-based", "lm"]
    assert recs[1]["fallback_reason"] and recs[1]["raw"] == "no keywords here"
    assert store.text(0, [1, 2]) == "Crime (Fargo (1996))"
    # a crash mid-append leaves a torn line: it is dropped, and nothing finished is made again
    with open(path, "ab") as f:
        f.write(b'{"user": 9, "key": "torn')
    again = ProfileStore(path, cat)
    assert len(again) == 3
    assert again.ensure([0, 1, 2], [[1, 2], [3, 4], [5, 6]], generate=lambda ps: 1 / 0) == 0
    assert path.read_bytes().endswith(b"\n")
    # rule-based profiles need no LM and say so
    rule = ProfileStore(None, cat)
    rule.ensure([3], [[1, 4, 9]])
    assert rule.get(3, [1, 4, 9])["source"] == "rule-based"
    append_jsonl(tmp_path / "x.jsonl", [])  # nothing to write is fine
    assert not (tmp_path / "x.jsonl").exists()


# -- instruction data ----------------------------------------------------------------------------
def test_cooccurrence_fills_hop_by_hop():
    # chain 1-2-3-4-5 (window 1): from 1, hop 1 gives 2, hop 2 gives 3, hop 3 gives 4
    g = Cooccurrence.from_sequences(np.array([0, 5]), np.array([1, 2, 3, 4, 5]), 5, window=1, top=4)
    assert g.expand([1], set(), 10, hops=3) == [2, 3, 4]
    assert g.expand([1], {3}, 10, hops=3) == [2]  # excluded items also stop the walk
    assert g.expand([1], set(), 1, hops=3) == [2]


def _held_out_changed(split, seed: int = 7):
    """The same training prefixes with different validation/test targets."""
    ds = split.dataset
    rng = np.random.default_rng(seed)
    items = ds.items.copy()
    has = ds.lengths >= 3
    ends = ds.offsets[1:][has]
    items[ends - 1] = rng.integers(1, ds.n_items + 1, size=len(ends))
    items[ends - 2] = rng.integers(1, ds.n_items + 1, size=len(ends))
    return leave_one_out(dataclasses.replace(ds, items=items))


def test_instruction_data_never_contains_a_validation_or_test_target():
    from padrec.data.registry import load_dataset

    needs_data("ml-100k")
    split = leave_one_out(load_dataset("ml-100k"))
    cat = ItemCatalog.from_dataset(split.dataset)
    cfg = PALRConfig(swap_prob=0.5)
    examples = build_examples(split, cat, cfg)
    users = {e["user"] for e in examples}
    assert len(users) == round(0.2 * split.dataset.n_users)  # every ml-100k user has >= 20 ratings
    assert {e["task"] for e in examples} == {"recommend", "recommend_retrieval"}
    held = {
        int(u): {int(v), int(t)}
        for u, v, t in zip(split.valid_users, split.valid_targets, split.test_targets, strict=True)
    }
    ext = split.dataset.item_index
    for e in examples:
        train = set(split.train_items[split.train_offsets[e["user"]] : split.train_offsets[e["user"] + 1]].tolist())
        own = [ext[i] for i in e["input"]] + [ext[i] for i, f in zip(e["label"], e["filled"], strict=True) if not f]
        assert set(own) <= train  # input and real label items come from the training prefix ...
        assert not set(own) & held[e["user"]]  # ... so no held-out target (ml-100k has no repeats)
        assert len(e["label"]) == cfg.n_recommend
        if e["candidates"] is not None:
            assert set(e["label"]) <= set(e["candidates"]) and len(e["candidates"]) == cfg.train_candidates
    # and nothing depends on the held-out targets: other targets, identical data
    assert build_examples(_held_out_changed(split), cat, cfg) == examples


def test_retriever_negatives_are_its_top_items_for_the_training_prefix():
    from padrec.data.registry import load_dataset

    needs_data("ml-100k")
    split = leave_one_out(load_dataset("ml-100k"))
    cat = ItemCatalog.from_dataset(split.dataset)
    cfg = PALRConfig(mode="verbalizer", train_negatives="retriever", retriever="pop", swap_prob=0.0)
    pop = Pop().fit(split)
    with pytest.raises(ValueError, match="train_negatives=retriever needs the retriever"):
        build_examples(split, cat, cfg)
    examples = [e for e in build_examples(split, cat, cfg, retriever=pop) if e["task"] == "recommend_retrieval"]
    ext = cat.external_ids
    by_popularity = [ext[i] for i in np.argsort(-pop.score([np.array([], dtype=np.int64)])[0, 1:].numpy(),
                                                kind="stable") + 1]  # fmt: skip
    for e in examples[:50]:
        seq = split.train_items[split.train_offsets[e["user"]] : split.train_offsets[e["user"] + 1]]
        prefix = {ext[i] for i in seq[: len(seq) - cfg.label_len]}  # what the retriever saw (and masks)
        taken = prefix | set(e["input"]) | set(e["label"])
        expected = [i for i in by_popularity if i not in taken][: cfg.train_candidates - 1]
        assert sorted(e["candidates"]) == sorted([e["target"], *expected])
        assert e["answer"] == LABELS[e["candidates"].index(e["target"])]
    # shuffled: the target is not always where the retriever would put it
    assert len({e["candidates"].index(e["target"]) for e in examples}) > 5
    # training prefixes only: other held-out targets (and a retriever fitted there) give the same data
    other = _held_out_changed(split)
    assert build_examples(other, cat, cfg, retriever=Pop().fit(other)) == build_examples(split, cat, cfg, retriever=pop)


def test_ordered_retriever_candidates_keep_its_order_and_leave_out_missed_users():
    from padrec.data.registry import load_dataset

    needs_data("ml-100k")
    split = leave_one_out(load_dataset("ml-100k"))
    cat = ItemCatalog.from_dataset(split.dataset)
    opts = dict(mode="verbalizer", train_negatives="retriever", retriever="pop", swap_prob=0.0, progress=False)
    pop = Pop().fit(split)
    ordered = build_examples(split, cat, PALRConfig(train_order="retriever", **opts), retriever=pop)
    ranked = [e for e in ordered if e["task"] == "recommend_retrieval"]
    ext = cat.external_ids
    by_popularity = [ext[i] for i in np.argsort(-pop.score([np.array([], dtype=np.int64)])[0, 1:].numpy(),
                                                kind="stable") + 1]  # fmt: skip
    cfg = PALRConfig(**opts)
    offered = 0
    for e in [e for e in ordered if e["task"] == "recommend"]:
        seq = split.train_items[split.train_offsets[e["user"]] : split.train_offsets[e["user"] + 1]]
        prefix = {ext[i] for i in seq[: len(seq) - cfg.label_len]}
        target = e["label"][0]
        top = [i for i in by_popularity if i not in prefix | set(e["input"]) | set(e["label"]) or i == target]
        top = top[: cfg.train_candidates]
        mine = [r for r in ranked if r["user"] == e["user"]]
        if target in top:  # the retriever offered it: the list as the retriever ranks it, the answer where it stands
            offered += 1
            assert len(mine) == 1 and mine[0]["candidates"] == top
            assert mine[0]["answer"] == LABELS[top.index(target)]
        else:  # it did not: no ranking example for this user
            assert mine == []
    assert 0 < offered == len(ranked) < len(ordered) - len(ranked)  # some users left out, none made up
    with pytest.raises(ValueError, match=r"train_order=retriever .* needs train_negatives=retriever"):
        PALRConfig(mode="verbalizer", train_order="retriever")


def test_instruction_data_made_with_other_negatives_is_refused(tmp_path, toy):
    from padrec.palr.pipeline import build_data, check_data_stage
    from padrec.train.config import ConfigError

    ds, _ = toy
    split = leave_one_out(ds)
    opts = dict(user_fraction=0.5, label_len=2, n_recommend=3, min_input=1, train_candidates=6, mode="verbalizer",
                retriever="pop", progress=False)  # fmt: skip
    meta, reused = build_data(split, tmp_path, PALRConfig(train_negatives="retriever", **opts))
    assert meta["negatives"] == "retriever:pop" and not reused
    with pytest.raises(ConfigError, match="takes its ranking negatives from retriever:pop, but this run asks for "
                       "cooccurrence"):  # fmt: skip
        check_data_stage(split, tmp_path, PALRConfig(**opts))
    with pytest.raises(ConfigError, match="train_order=shuffled, but this run asks for retriever"):
        check_data_stage(split, tmp_path, PALRConfig(train_negatives="retriever", train_order="retriever", **opts))


def test_build_data_writes_jsonl_and_meta(tmp_path, toy):
    ds, cat = toy
    split = leave_one_out(ds)
    cfg = PALRConfig(user_fraction=0.5, label_len=2, n_recommend=3, min_input=1, train_candidates=6)
    meta = build_instruction_data(split, cat, cfg, tmp_path)
    rows = read_examples(tmp_path)
    assert meta["examples"] == len(rows) == 2 * meta["users"] == 12
    assert meta["prompt_version"] == PROMPT_VERSION
    assert meta["filled_share"] > 0  # labels of 2 items are filled to 3 from co-occurrence
    assert all(r["answer"].count("\n") == 2 for r in rows)


# -- output mapping --------------------------------------------------------------------------------
def test_outputs_map_to_candidates_despite_case_and_punctuation(toy):
    ds, cat = toy
    ix = ds.item_index
    cands = [ix[m] for m in ("m2", "m1", "m12", "m6")]
    answer = (
        "Sure! Here are my picks:\n"
        "1. the empire strikes back (1980)\n"  # article moved, case
        '2) "TOY STORY (1995)"\n'  # quotes, case, other list marker
        "3. Se7en 1995\n"  # punctuation
        "4. Toy Story (1995)\n"  # a repeat: dropped, not a hallucination
        "5. Casablanca (1942)\n"  # a real movie but not a candidate: hallucination
        "6. The Matrix (1999)\n"  # not in the catalogue: hallucination
        "7. Heat (1959)\n"  # one digit off: fuzzy match
    )
    outs = parse_generation(answer)
    assert outs[0] == "the empire strikes back (1980)" and len(outs) == 7  # the preamble is not an answer
    m = map_to_candidates(outs, cands, cat, threshold=0.85)
    assert m.items == [ix["m2"], ix["m1"], ix["m12"], ix["m6"]]
    assert m.hallucinated == ["Casablanca (1942)", "The Matrix (1999)"]
    assert m.duplicates == 1 and m.fuzzy == 1
    assert normalize_title("Empire Strikes Back, The (1980)") == normalize_title("The Empire Strikes Back (1980)")
    assert map_to_candidates(["Fargo"], [ix["m3"]], cat).items == [ix["m3"]]  # the year may be left out


# -- the ranker as a recommender --------------------------------------------------------------------
def test_ranker_scores_put_model_picks_first_then_fallback(monkeypatch, toy):
    ds, cat = toy
    split = leave_one_out(ds)
    pop = Pop().fit(split)
    cfg = PALRConfig(n_candidates=4, n_recommend=3, mode="generation", max_users=None, profile="rule")
    ranker = PALRRanker(lm=object(), retriever=pop, cfg=cfg, catalog=cat, label="palr-test").fit(split)
    hist = split.histories("test")[:2]
    cands = top_candidates(pop.score(hist).float(), hist, 4)

    def fake_generate(lm, prompts, max_new_tokens=0, batch_size=1):  # picks the last candidate shown
        shown = [[ln[2:] for ln in p.splitlines() if ln.startswith("- ")] for p in prompts]
        return [f"1. {s[-1]}\n2. The Matrix (1999)\n" for s in shown]

    monkeypatch.setattr("padrec.palr.lm.generate", fake_generate)
    s = ranker.score(hist, users=split.test_users[:2])
    assert s.shape == (2, split.n_items + 1)
    order = torch.argsort(s[0], descending=True)[:4].tolist()
    assert order == [int(cands[0][-1]), *map(int, cands[0][:-1])]  # model pick, then retriever order
    outside = [i for i in range(1, split.n_items + 1) if i not in set(cands[0].tolist())]
    assert s[0, outside].max() < s[0, cands[0]].min()  # every candidate above every other item
    summary = ranker.summary()
    assert summary["hallucination_rate"] == pytest.approx(0.5)  # 1 of 2 answer lines per user
    assert summary["model_items"] == 2 and summary["fallback_items"] == 4
    assert summary["fallback_share"] == pytest.approx(4 / 6)


def test_ranker_without_lm_equals_retriever_and_samples_users(toy):
    ds, cat = toy
    split = leave_one_out(ds)
    retr = RandomRec(seed=1).fit(split)  # no tied scores: the ranker's order is then exactly the retriever's
    sub = sample_users(split, 5, seed=3)
    assert len(sub.test_users) == len(sub.valid_users) == 5
    assert sample_users(split, 5, seed=3).test_users.tolist() == sub.test_users.tolist()
    cfg = PALRConfig(n_candidates=split.n_items, max_users=5)
    ranker = PALRRanker(lm=None, retriever=retr, cfg=cfg, catalog=cat).fit(split)
    ev = Evaluator(sub, Protocol())
    assert ev.run(ranker).overall == pytest.approx(ev.run(retr).overall)
    rec = candidate_recall(retr, sub, 3)
    assert rec["users"] == 5 and 0 <= rec["Recall@3"] <= 1


def test_upper_bound_forces_the_target_into_the_candidates(toy):
    ds, cat = toy
    split = leave_one_out(ds)
    pop = Pop().fit(split)
    ranker = PALRRanker(None, pop, PALRConfig(n_candidates=2, upper_bound=True), cat).fit(split)
    users, targets = split.test_users, split.test_targets
    ranker.forced = dict(zip(users.tolist(), targets.tolist(), strict=True))
    s = ranker.score(split.histories("test"), users=users)
    top2 = torch.topk(s, 2, dim=1).indices.numpy()
    assert all(t in row for t, row in zip(targets, top2, strict=True))


def test_config_file_and_overrides():
    cfg = load_palr_config("ml-1m", {"lr": 1e-4, "tasks": ["recommend"]})
    assert cfg.item_format == "title_year" and cfg.n_candidates == 50 and cfg.user_fraction == 0.2
    assert cfg.lr == 1e-4 and cfg.tasks == ("recommend",)
    from padrec.train.config import ConfigError

    with pytest.raises(ConfigError, match="unknown PALR config key 'lrr'"):
        load_palr_config(None, {"lrr": 1})


def test_import_padrec_palr_stays_light():
    code = (
        "import sys, padrec, padrec.palr, padrec.palr.cli, padrec.palr.rank, padrec.palr.pipeline;"
        "print([m for m in ('transformers', 'peft') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_build_data_json(tmp_path):
    import typer
    from typer.testing import CliRunner

    from padrec.palr.cli import register

    needs_data("ml-100k")
    app = typer.Typer()
    app.command()(lambda: None)  # a second command keeps "palr" a sub-command
    register(app)
    args = ["palr", "build-data", "--dataset", "ml-100k", "--run-dir", str(tmp_path), "user_fraction=0.05", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["users"] == round(0.05 * 943) and not out["reused"]
    res = CliRunner().invoke(app, args)
    assert json.loads(res.stdout)["reused"]
    bad = CliRunner().invoke(app, [*args[:-2], "user_fraction=0.1"])
    assert bad.exit_code == 2 and "other instruction-data options" in bad.output


def test_cli_profiles_rule_based_json(tmp_path):
    import typer
    from typer.testing import CliRunner

    from padrec.palr.cli import register

    needs_data("ml-100k")
    app = typer.Typer()
    app.command()(lambda: None)
    register(app)
    args = ["palr", "profiles", "--dataset", "ml-100k", "--run-dir", str(tmp_path), "--max-users", "30", "--json"]
    out = json.loads(CliRunner().invoke(app, args).stdout)
    assert out["made"] == 30 and out["rule-based"] == 30 and out["lm"] == 0
    assert json.loads(CliRunner().invoke(app, args).stdout)["made"] == 0  # cached


def test_instruction_data_records_what_it_was_built_from(tmp_path, toy):
    from padrec.palr.finetune import DONE_FILE
    from padrec.palr.pipeline import build_data, check_stages
    from padrec.train.config import ConfigError

    ds, _ = toy
    split = leave_one_out(ds)
    cfg = PALRConfig(user_fraction=0.5, label_len=2, n_recommend=3, min_input=1, train_candidates=6, progress=False)
    meta, reused = build_data(split, tmp_path, cfg)
    assert not reused and meta["dataset"] == "ml-toy" and meta["n_items"] == 12
    assert meta["retrieval_format"] == "titles" and len(meta["data_fingerprint"]) == 16
    assert build_data(split, tmp_path, cfg)[1]  # the same data and options: reused
    meta_path = tmp_path / "data" / "meta.json"
    old = {k: v for k, v in meta.items() if k not in ("data_fingerprint", "n_items", "retrieval_format")}
    meta_path.write_text(json.dumps(old))  # as written before fingerprints: compared by the data's shape
    assert build_data(split, tmp_path, cfg)[1]
    meta_path.write_text(json.dumps({**old, "dataset_shape": [12, 12, 1]}))
    with pytest.raises(ConfigError, match=r"older than the data: .* \(users/items/interactions 12/12/1 then"):
        build_data(split, tmp_path, cfg)
    meta_path.write_text(json.dumps(meta))
    # the same name and size, other interactions: refused, with how to rebuild
    other = leave_one_out(toy_movies(n_users=13))
    with pytest.raises(ConfigError, match=r"is older than the data: dataset 'ml-toy' changed since .* build-data"):
        build_data(other, tmp_path, cfg)
    with pytest.raises(ConfigError, match=r"holds titles-format ranking examples .* mode=verbalizer trains labelled"):
        build_data(split, tmp_path, cfg.model_copy(update={"mode": "verbalizer"}))
    # a finished fine-tuning is only reused with the instruction data it was trained on
    ft = tmp_path / "finetune"
    ft.mkdir()
    record = {k: meta[k] for k in ("dataset", "n_items", "data_fingerprint", "retrieval_format")}
    summary = {"path": str(ft / "adapter"), "config": cfg.model_dump(mode="json"), "data": record}
    (ft / DONE_FILE).write_text(json.dumps(summary))
    check_stages(split, tmp_path, cfg)
    (ft / DONE_FILE).write_text(json.dumps({**summary, "data": {**record, "data_fingerprint": "0" * 16}}))
    with pytest.raises(ConfigError, match=r"was trained on other instruction data .* delete"):
        check_stages(split, tmp_path, cfg)
