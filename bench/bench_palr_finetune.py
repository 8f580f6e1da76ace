"""PALR fine-tuned (v1, v2) next to zero-shot and the retriever, CPU-sized, on one dataset per call.

    python bench/bench_palr_finetune.py --dataset amazon-beauty --retriever bench/.work/runs/amazon-beauty/sasrec

One process, one step after the other (the LM never runs next to other heavy work of this script):

1. zero-shot SmolLM2 ranks the retriever's top-``--n-candidates`` for ``--users`` seeded test users
   (likelihood ranking), realistic candidates and with the target forced in (``-gt``);
2. v1: LoRA fine-tuning on *Recommend* examples only (``--steps`` optimiser steps), then the same ranking;
3. v2: LoRA fine-tuning on *Recommend* + *Recommend_Retrieval*, then realistic, ``-gt`` and generation
   (``--gen-users`` users, answers mapped back to candidates, hallucinations counted).

Instruction data comes from training prefixes only (PALR's 20% of users); every fine-tuning starts from
the base model. Records ``palr-zeroshot``, ``palr-zeroshot-gt``, ``palr-v1``, ``palr-v2``, ``palr-v2-gt``,
``palr-v2-generation`` and the retriever under its own name are merged into ``bench/results/palr.json``;
``bench/results/palr.md`` gets a table with the PALR paper's rows next to ours. This is a CPU-sized
run (a 135M model, a few hundred steps, a user sample): the note of every record says so.
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

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.report import git_commit, merge_bench
from padrec.models.base import Recommender
from padrec.palr.config import load_palr_config
from padrec.palr.pipeline import evaluate_palr, run_finetune

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "palr-ft"
RESULTS = ROOT / "results" / "palr.json"

#: PALR paper, Table 2 (LLaMA-7B, full ranking, leave-one-out): dataset -> model -> (HR@10, NDCG@10).
PAPER = {
    "amazon-beauty": {"sasrec": (0.0617, 0.0283), "palr-v1": (0.0181, 0.0101), "palr-v2": (0.0721, 0.0446)},
    "ml-1m": {"sasrec": (0.1978, 0.1192), "palr-v1": (0.1216, 0.0569), "palr-v2": (0.2110, 0.1276)},
}
ORDER = ["sasrec", "palr-zeroshot", "palr-zeroshot-gt", "palr-v1", "palr-v2", "palr-v2-gt", "palr-v2-generation"]


def markdown(records: list[dict]) -> str:
    acc = [r for r in records if r.get("task") == "accuracy"]
    lines = [
        "# PALR (CPU-sized runs: SmolLM2-135M-Instruct, LoRA, seeded user samples)",
        "",
        "| dataset | model | protocol | users | HR@10 | NDCG@10 | paper HR@10 / NDCG@10 | hallucination_rate "
        "| fallback_share | users/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def key(r: dict) -> tuple:
        m = r["model"]
        return (r["dataset"], ORDER.index(m) if m in ORDER else len(ORDER), m)

    for r in sorted(acc, key=key):
        m = r["metrics"]
        pub = PAPER.get(r["dataset"], {}).get(r["model"])
        fmt = lambda k, m=m: f"{m[k]:.4f}" if isinstance(m.get(k), int | float) else "–"  # noqa: E731
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['protocol']} | {m.get('users', '–')} | {fmt('HR@10')} "
            f"| {fmt('NDCG@10')} | {f'{pub[0]:.4f} / {pub[1]:.4f}' if pub else '–'} | {fmt('hallucination_rate')} "
            f"| {fmt('fallback_share')} | {fmt('users_per_second')} |"
        )
    lines += ["", "Notes per record (sample size, candidates, fine-tuning budget) are in `palr.json`.", ""]
    speed = [r for r in records if r.get("task") != "accuracy"]
    if speed:
        lines += ["| task | dataset | model | metrics | note |", "|---|---|---|---|---|"]
        for r in speed:
            ms = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["metrics"].items())
            lines.append(f"| {r['task']} | {r['dataset']} | {r['model']} | {ms} | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def merge(records: list[dict]) -> None:
    merge_bench("palr", records, lambda r: (r["task"], r["dataset"], r["model"]), markdown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--retriever", type=Path, required=True, help="run directory of a trained recommender")
    ap.add_argument("--lm", default="smollm2")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--gen-users", type=int, default=10)
    ap.add_argument("--n-candidates", type=int, default=20)
    ap.add_argument("--max-history", type=int, default=10)
    ap.add_argument("--steps", type=int, default=150, help="optimiser steps per fine-tuning")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument(
        "--stages",
        nargs="+",
        choices=["zeroshot", "v1", "v2"],
        default=["zeroshot", "v1", "v2"],
        help="which steps to run; records of the others already in palr.json are kept",
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from padrec.palr.lm import load_causal_lm

    split = leave_one_out(load_dataset(args.dataset))
    retriever = Recommender.load(args.retriever)
    run_root = args.run_dir or WORK / args.dataset
    base = {
        "n_candidates": args.n_candidates,
        "train_candidates": args.n_candidates,
        "max_history": args.max_history,
        "users_seed": args.seed,
        "seed": args.seed,
        "progress": False,
        "lm": args.lm,
        "profile": "rule",
        "max_users": args.users,
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_seq_len": 1024,
        "checkpoint_every": 25,
    }
    cpu = (
        f"CPU-sized run on a shared 2-core CPU ({args.threads} torch thread): {args.lm} (135M), "
        f"{args.n_candidates} candidates (paper: 50), {args.max_history} history items (paper: 20), "
        "rule-based profiles"
    )
    records: list[dict] = []

    def evaluate(lm, label: str, ft: dict | None, **over) -> None:
        cfg = load_palr_config(split.dataset.name, {**base, **over})
        t0 = time.perf_counter()
        ev = evaluate_palr(split, cfg, lm, label, run_dir=run_root, retriever=retriever)
        print(ev.table(), f"({time.perf_counter() - t0:.0f}s)", flush=True)
        palr, retr, *fused = ev.records(device="cpu", seeds=[args.seed])  # fused: with fusion=true
        palr["model"] = label
        tune = (
            f"; LoRA r={cfg.lora_r} on {','.join(cfg.tasks)}: {ft['steps']} steps x batch {cfg.batch_size}, "
            f"lr {cfg.lr}, loss {ft['first_loss']:.3f} -> {ft['last_loss']:.3f}, {ft['seconds']:.0f}s"
            if ft
            else "; zero-shot (no fine-tuning)"
        )
        palr["note"] = f"{palr['note']}{tune}; {cpu}"
        palr["commit"] = git_commit()
        records.append(palr)
        for f in fused:
            f["note"] = f"{f['note']}{tune}; {cpu}"
            f["commit"] = git_commit()
            records.append(f)
        if not any(r["model"] == retr["model"] for r in records):
            retr["note"] = f"{retr['note']}; {cpu}"
            retr["commit"] = git_commit()
            records.append(retr)
        merge(records)

    if "zeroshot" in args.stages:
        lm = load_causal_lm(args.lm)
        evaluate(lm, "palr-zeroshot", None)
        evaluate(lm, "palr-zeroshot-gt", None, upper_bound=True)
        del lm
    for name, tasks in (("v1", ["recommend"]), ("v2", ["recommend", "recommend_retrieval"])):
        if name not in args.stages:
            continue
        cfg = load_palr_config(split.dataset.name, {**base, "tasks": tasks})
        lm, ft, reused = run_finetune(split, run_root / name, cfg)  # loads the base model afresh
        brief = {k: ft[k] for k in ("steps", "first_loss", "last_loss", "seconds")}
        print(f"{name}: fine-tuning {'reused' if reused else 'done'}: {json.dumps(brief)}", flush=True)
        evaluate(lm, f"palr-{name}", ft, tasks=tasks)
        if name == "v2":
            evaluate(lm, "palr-v2-gt", ft, tasks=tasks, upper_bound=True)
            evaluate(lm, "palr-v2-generation", ft, tasks=tasks, mode="generation", max_users=args.gen_users)
        del lm
    print(f"wrote {RESULTS}", flush=True)


if __name__ == "__main__":
    main()
