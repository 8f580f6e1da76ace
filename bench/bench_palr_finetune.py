"""PALR v2 at benchmark scale next to its retriever, on one dataset per call (zero-shot and v1 on request).

    python bench/bench_palr_finetune.py --dataset ml-1m --retriever RUN --users 1000 --threads 2

One process, one row after the other; every stage resumes after a kill (instruction data, fine-tuning from
``last.ckpt``, rankings from their per-user cache):

1. v2: LoRA fine-tuning on *Recommend* + *Recommend_Retrieval* (the retrieval task in the verbalizer's labelled
   format, so training reads the same answer token the ranker scores), ``--steps`` optimiser steps, ranked on
   ``--select-users`` seeded validation users every ``--select-every`` steps; the best adapter is kept;
2. ``palr-v2``: the verbalizer ranks the retriever's top-``--n-candidates`` for ``--users`` seeded test users
   (bfloat16 weights), with ``palr-v2-fusion`` (LM and retriever scores mixed by a weight chosen on validation
   users) and the retriever on exactly those users;
3. ``palr-v2-gt``: the same with the target forced in (an upper bound, never the headline);
4. ``palr-v2-generation``: generation on ``--gen-users`` users, answers mapped back, hallucinations counted.

Instruction data comes from training prefixes only (PALR's 20% of users); every fine-tuning starts from the
base model. Records are merged into ``bench/results/palr.json`` (``--results`` for another folder) as each row
finishes; ``palr.md`` gets a table with the PALR paper's rows next to ours. The note of every record says what it
rests on (users, steps, examples, CPU threads).
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
ORDER = [
    "sasrec", "palr-zeroshot", "palr-zeroshot-gt", "palr-v1", "palr-v2", "palr-v2-fusion", "palr-v2-gt",
    "palr-v2-generation", "palr-v2-hardneg", "palr-v2-hardneg-fusion", "palr-v2-hardneg-gt",
    "palr-v2-hardneg-generation", "palr-v2-ordered", "palr-v2-ordered-fusion", "palr-v2-ordered-gt",
    "palr-v2-ordered-generation",
]  # fmt: skip


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


def merge(records: list[dict], results: Path | None = None) -> None:
    merge_bench("palr", records, lambda r: (r["task"], r["dataset"], r["model"]), markdown, results_dir=results)


STAGES = ["zeroshot", "zeroshot-gt", "v1", "v2", "v2-gt", "v2-generation"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--retriever", type=Path, required=True, help="run directory of a trained recommender")
    ap.add_argument("--lm", default="smollm2")
    ap.add_argument("--users", type=int, default=1000, help="seeded test users ranked (0 = every one)")
    ap.add_argument("--gen-users", type=int, default=200)
    ap.add_argument("--n-candidates", type=int, default=20)
    ap.add_argument("--max-history", type=int, default=10)
    ap.add_argument("--mode", choices=["verbalizer", "likelihood"], default="verbalizer")
    ap.add_argument("--lm-dtype", choices=["float32", "bfloat16"], default="bfloat16", help="ranking weights")
    ap.add_argument("--precision", default="bf16-mixed", help="fine-tuning precision (Lightning)")
    ap.add_argument("--lora-layers", type=int, default=8, help="LoRA in the top N decoder layers (0 = all)")
    ap.add_argument("--steps", type=int, default=500, help="optimiser steps per fine-tuning (-1 = one epoch)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--select-every", type=int, default=100, help="validation selection every N steps (0 = off)")
    ap.add_argument("--select-users", type=int, default=64)
    ap.add_argument("--no-fusion", action="store_true", help="skip the fused LM + retriever row")
    ap.add_argument(
        "--train-negatives",
        choices=["cooccurrence", "retriever"],
        default="cooccurrence",
        help="ranking examples' negatives: co-occurrence + random items, or the retriever's top items",
    )
    ap.add_argument(
        "--train-order",
        choices=["shuffled", "retriever"],
        default="shuffled",
        help="list the retriever's training candidates in its order (needs --train-negatives retriever)",
    )
    ap.add_argument("--user-fraction", type=float, default=0.2, help="users giving instruction examples (PALR: 0.2)")
    ap.add_argument("--tag", default="", help="appended to the fine-tuned rows' names (palr-v2-TAG, ...)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=["v2", "v2-gt", "v2-generation"],
        help="which rows to measure (v2-gt and v2-generation fine-tune v2 first, or reuse it); records of the "
        "others already in palr.json are kept",
    )
    ap.add_argument("--results", type=Path, help="folder of palr.json/.md (default bench/results)")
    ap.add_argument("--context", default="", help="what else ran on the machine (goes into every note)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from padrec.palr.lm import load_causal_lm
    from padrec.palr.pipeline import ranking_lm

    split = leave_one_out(load_dataset(args.dataset))
    retriever = Recommender.load(args.retriever)
    run_root = args.run_dir or WORK / args.dataset
    base = {
        "n_candidates": args.n_candidates,
        "train_candidates": args.n_candidates,
        "max_history": args.max_history,
        "users_seed": args.seed,
        "seed": args.seed,
        "progress": True,
        "lm": args.lm,
        "profile": "rule",
        "retriever": str(args.retriever.resolve()),
        "mode": args.mode,
        "lm_dtype": args.lm_dtype,
        "precision": args.precision,
        "lora_layers": args.lora_layers or None,
        "max_users": args.users or None,
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_seq_len": 1024,
        "checkpoint_every": 25,
        "select_every": args.select_every,
        "select_users": args.select_users,
        "fusion": not args.no_fusion,
        "train_negatives": args.train_negatives,
        "train_order": args.train_order,
        "user_fraction": args.user_fraction,
    }
    tag = f"-{args.tag}" if args.tag else ""
    cpu = (
        f"CPU run on a shared 2-core CPU ({args.threads} torch thread{'s' if args.threads > 1 else ''}"
        f"{', ' + args.context if args.context else ''}): {args.lm} (135M), {args.n_candidates} candidates "
        f"(paper: 50), {args.max_history} history items (paper: 20), rule-based profiles, ranking {args.mode} "
        f"in {args.lm_dtype}"
    )
    records: list[dict] = []

    def evaluate(lm, label: str, ft: dict | None, **over) -> None:
        cfg = load_palr_config(split.dataset.name, {**base, **over})
        lm = ranking_lm(lm, cfg)
        t0 = time.perf_counter()
        ev = evaluate_palr(split, cfg, lm, label, run_dir=run_root, retriever=retriever)
        print(ev.table(), f"({time.perf_counter() - t0:.0f}s)", flush=True)
        palr, retr, *fused = ev.records(device="cpu", seeds=[args.seed])  # fused: with fusion=true
        palr["model"] = label
        tune = "; zero-shot (no fine-tuning)"
        if ft:
            sel = ft.get("selection") or {}
            chosen = (
                f", validation-selected step {sel['best_step']} of {ft['steps']} (NDCG@10 {sel['best_score']:.4f} on "
                f"{sel['users']} validation users{', stopped early' if sel.get('stopped_early') else ''})"
                if sel.get("best_step") is not None
                else ""
            )
            layers = f" in the top {cfg.lora_layers} layers" if cfg.lora_layers else ""
            negs = "co-occurrence + random" if cfg.train_negatives == "cooccurrence" else "the retriever's top items"
            if cfg.train_order == "retriever":
                negs += ", in its order (users whose next item it missed left out)"
            users = f"{cfg.user_fraction:.0%} of users, " if cfg.user_fraction != 0.2 else ""
            resumed = " (resumed after a kill: the last process's time only)" if ft.get("resumed") else ""
            tune = (
                f"; training negatives: {negs}; LoRA r={cfg.lora_r}{layers} on {','.join(cfg.tasks)} "
                f"({users}{ft['examples']} examples, {cfg.precision}):"
                f" {ft['steps']} steps x batch {cfg.batch_size}, lr {cfg.lr}, loss {ft['first_loss']:.3f} -> "
                f"{ft['last_loss']:.3f}, {ft['seconds']:.0f}s{resumed}{chosen}"
            )
        for r in (palr, *fused):
            r["note"] = f"{r['note']}{tune}; {cpu}"
            r["commit"] = git_commit()
            records.append(r)
        if not any(r["model"] == retr["model"] for r in records):
            retr["note"] = f"{retr['note']}; {cpu}"
            retr["commit"] = git_commit()
            records.append(retr)
        merge(records, args.results)

    if {"zeroshot", "zeroshot-gt"} & set(args.stages):
        lm = load_causal_lm(args.lm)
        if "zeroshot" in args.stages:
            evaluate(lm, "palr-zeroshot", None)
        if "zeroshot-gt" in args.stages:
            evaluate(lm, "palr-zeroshot-gt", None, upper_bound=True, fusion=False)
        del lm
    v2_rows = {"v2", "v2-gt", "v2-generation"} & set(args.stages)
    for name, tasks in (("v1", ["recommend"]), ("v2", ["recommend", "recommend_retrieval"])):
        if name not in args.stages and not (name == "v2" and v2_rows):
            continue
        cfg = load_palr_config(split.dataset.name, {**base, "tasks": tasks})
        lm, ft, reused = run_finetune(split, run_root / name, cfg)  # loads the base model afresh
        brief = {k: ft[k] for k in ("steps", "first_loss", "last_loss", "seconds")}
        print(f"{name}: fine-tuning {'reused' if reused else 'done'}: {json.dumps(brief)}", flush=True)
        if name in args.stages:
            evaluate(lm, f"palr-{name}{tag}", ft, tasks=tasks)
        if name == "v2" and "v2-gt" in args.stages:
            evaluate(lm, f"palr-v2{tag}-gt", ft, tasks=tasks, upper_bound=True, fusion=False)
        if name == "v2" and "v2-generation" in args.stages:
            over = {"mode": "generation", "max_users": args.gen_users, "fusion": False}
            evaluate(lm, f"palr-v2{tag}-generation", ft, tasks=tasks, **over)
        del lm
    print(f"wrote {(args.results / 'palr.json') if args.results else RESULTS}", flush=True)


if __name__ == "__main__":
    main()
