"""PALR zero-shot with the real SmolLM2-135M-Instruct on a CPU-sized user sample, next to its retriever.

    python bench/bench_palr.py --dataset ml-100k --users 20 --gen-users 4 --profile-users 4

Steps (one process, one after the other: LLM work never runs next to other heavy work of this script):

1. the retriever: ``--retriever auto`` trains a small SASRec once into ``bench/.work/palr/<dataset>/sasrec``
   (reused afterwards; ``--sasrec-epochs``), ``pop`` fits popularity, or pass a run directory;
2. LM profile generation for ``--profile-users`` users → users/s and how often the answer was unusable;
3. zero-shot likelihood ranking of the retriever's top-``--n-candidates`` for ``--users`` users;
4. zero-shot generation ranking for ``--gen-users`` users (answers mapped back to candidates,
   hallucinations counted, the list filled from the retriever).

Records (MISSION.md §5) in ``bench/results/palr.json``: ``palr-zeroshot`` (likelihood),
``palr-zeroshot-generation``, the retriever under its own name (with its Recall@N), and a ``speed``
record for profile generation; protocol ``full-loo``; the note says how many users and that it is a
CPU-sized sample. Ranking uses rule-based profiles (LM profiles are only timed, step 2).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from bench_palr_finetune import RESULTS, merge  # same folder: one table and one merge for both benches

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.report import git_commit
from padrec.models.base import Recommender
from padrec.palr.config import load_palr_config
from padrec.palr.pipeline import evaluate_palr
from padrec.palr.retrieval import candidate_recall, load_retriever, sample_users

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "palr"


def get_retriever(spec: str, split, epochs: int) -> Recommender:
    if spec != "auto":
        return load_retriever(spec, split)
    run_dir = WORK / split.dataset.name / "sasrec"
    if not (run_dir / "model.pt").exists():
        from padrec.models import get_model_class
        from padrec.train.config import resolve

        cls = get_model_class("sasrec")
        params, tcfg = resolve("sasrec", cls.config_cls, split.dataset.name, {"max_epochs": epochs, "progress": False})
        rec = cls(params=params.model_dump(), train=tcfg.model_dump())
        t0 = time.perf_counter()
        rec.fit(split, run_dir=run_dir)
        print(f"trained SASRec ({epochs} epochs max) in {time.perf_counter() - t0:.0f}s → {run_dir}", flush=True)
    return Recommender.load(run_dir)


def profile_speed(lm, split, cfg, n_users: int) -> dict:
    from padrec.palr.lm import generate
    from padrec.palr.pipeline import profile_store
    from padrec.palr.profile import profile_histories
    from padrec.palr.prompts import ItemCatalog

    sub = sample_users(split, n_users, cfg.users_seed, "test")
    users = sub.users("test")
    hists = profile_histories(sub.histories("test", users), cfg.max_history)
    store = profile_store(None, ItemCatalog.from_dataset(split.dataset, cfg.item_format))
    t0 = time.perf_counter()
    store.ensure(
        users,
        hists,
        generate=lambda ps: generate(lm, ps, cfg.profile_max_new_tokens, cfg.profile_batch_size),
        lm_name=lm.spec,
        k=cfg.profile_keywords,
        items_per_keyword=cfg.profile_items_per_keyword,
        batch_size=cfg.profile_batch_size,
        progress=False,
    )
    secs = time.perf_counter() - t0
    example = next(iter(store.records.values()))
    print(f"profile example: {json.dumps(example)[:600]}", flush=True)
    return {
        "users": len(users),
        "seconds": secs,
        "users_per_second": len(users) / secs,
        "lm_fallback_share": store.stats["lm_fallbacks"] / max(len(users), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--lm", default="smollm2")
    ap.add_argument("--retriever", default="auto", help="auto (train SASRec once), pop, or a run directory")
    ap.add_argument("--sasrec-epochs", type=int, default=30)
    ap.add_argument("--users", type=int, default=20, help="users for likelihood ranking")
    ap.add_argument("--gen-users", type=int, default=4, help="users for generation ranking")
    ap.add_argument("--profile-users", type=int, default=4, help="users for LM profile generation")
    ap.add_argument("--n-candidates", type=int, default=20)
    ap.add_argument("--max-history", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from padrec.palr.lm import load_causal_lm

    split = leave_one_out(load_dataset(args.dataset))
    retriever = get_retriever(args.retriever, split, args.sasrec_epochs)
    retr_name = getattr(retriever, "label", None) or retriever.name
    t0 = time.perf_counter()
    lm = load_causal_lm(args.lm)
    load_s = time.perf_counter() - t0
    print(f"loaded {args.lm} in {load_s:.1f}s", flush=True)

    base = {
        "n_candidates": args.n_candidates,
        "max_history": args.max_history,
        "users_seed": args.seed,
        "progress": False,
        "lm": args.lm,
        "profile": "rule",
    }
    cfg_like = load_palr_config(split.dataset.name, {**base, "mode": "likelihood", "max_users": args.users})
    cfg_gen = load_palr_config(split.dataset.name, {**base, "mode": "generation", "max_users": args.gen_users})
    prof = profile_speed(lm, split, cfg_like, args.profile_users)
    print(f"profiles: {prof}", flush=True)
    like = evaluate_palr(split, cfg_like, lm, "palr-zeroshot", retriever=retriever)
    print(like.table(), flush=True)
    gen = evaluate_palr(split, cfg_gen, lm, "palr-zeroshot-generation", retriever=retriever)
    print(gen.table(), flush=True)
    for ex in gen.examples[:1]:
        print("generation example answer:", repr(ex.get("answer", ""))[:400], flush=True)

    sub = sample_users(split, args.users, args.seed, "test")
    recall50 = candidate_recall(retriever, sub, 50)["Recall@50"]
    device = "cpu"
    cpu = (
        f"CPU-sized sample on a shared 2-core CPU ({args.threads} torch thread, other jobs running: "
        "speeds are indicative only); zero-shot (no fine-tuning); rule-based profiles in the prompts; "
        f"{args.n_candidates} candidates (paper: 50) and {args.max_history} history items (paper: 20) to fit CPU time"
    )
    like_recs = like.records(device=device, seeds=[args.seed])
    gen_recs = gen.records(device=device, seeds=[args.seed])
    for r in like_recs + gen_recs:
        r["note"] = f"{r['note']}; {cpu}"
    retr = like_recs[1]
    retr["model"] = retr_name
    retr["metrics"]["Recall@50"] = recall50
    records = [like_recs[0], gen_recs[0], retr]
    records.append(
        {
            "task": "speed",
            "dataset": split.dataset.name,
            "model": f"palr-profile-{args.lm}",
            "protocol": "n/a",
            "metrics": {
                "users_per_second": prof["users_per_second"],
                "lm_fallback_share": prof["lm_fallback_share"],
                "users": prof["users"],
                "model_load_seconds": load_s,
            },
            "device": device,
            "seeds": [args.seed],
            "commit": git_commit(),
            "date": time.strftime("%Y-%m-%d"),
            "note": (
                f"LM profile generation, {prof['users']} users, batch {cfg_like.profile_batch_size}, greedy, "
                f"max {cfg_like.profile_max_new_tokens} new tokens; lm_fallback_share = answers with no usable "
                f"keyword (rule-based profile used instead); {cpu}"
            ),
        }
    )
    merge(records)
    print(f"wrote {RESULTS}", flush=True)


if __name__ == "__main__":
    main()
