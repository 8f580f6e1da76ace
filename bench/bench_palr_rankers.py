"""PALR ranking speed: likelihood (one pass per candidate title) vs verbalizer (one pass per batch of users),
side by side in one process, on the same users, candidates, prompts' histories and LM.

    python bench/bench_palr_rankers.py --dataset ml-1m --users 32 --n-candidates 20

Zero-shot SmolLM2-135M-Instruct (the speed does not depend on fine-tuning), rule-based profiles, a popularity
retriever (its candidates cost nothing, so the timing is the LM's). Each mode runs twice in alternating order and
the faster of its two runs counts (this machine is shared: the slower run is the one a neighbour disturbed).
Writes ``bench/results/palr_rankers.json`` and ``.md``. NDCG@10 is printed for information only: zero-shot on a
few users, it says nothing about fine-tuned quality.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.report import git_commit, merge_bench
from padrec.models.simple import Pop
from padrec.palr.config import load_palr_config
from padrec.palr.lm import load_causal_lm
from padrec.palr.pipeline import evaluate_palr

RESULTS = Path(__file__).resolve().parent / "results"


def _markdown(records: list[dict]) -> str:
    lines = [
        "# PALR ranking speed: likelihood vs verbalizer (same users, candidates and LM, one process)",
        "",
        "| dataset | lm | mode | users | candidates | users/s | speed-up | NDCG@10 (info) | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        m = r["metrics"]
        lines.append(
            f"| {r['dataset']} | {r['lm']} | {r['mode']} | {r['users']} | {r['n_candidates']} | "
            f"{m['users_per_second']:.3f} | {m['speedup_vs_likelihood']:.1f}x | {m['NDCG@10']:.4f} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--n-candidates", type=int, default=20)
    ap.add_argument("--lm", default="smollm2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8, help="users per forward pass (verbalizer)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    split = leave_one_out(load_dataset(args.dataset))
    retriever = Pop().fit(split)
    lm = load_causal_lm(args.lm)
    base = {"n_candidates": args.n_candidates, "max_users": args.users, "progress": False, "retriever": "pop"}
    best: dict[str, tuple[float, object]] = {}
    for mode in ("likelihood", "verbalizer", "likelihood", "verbalizer"):
        cfg = load_palr_config(split.dataset.name, {**base, "mode": mode, "verbalizer_batch": args.batch})
        t0 = time.perf_counter()
        ev = evaluate_palr(split, cfg, lm, f"palr-zeroshot-{mode}", retriever=retriever)
        secs = time.perf_counter() - t0
        print(f"{mode:10s} {args.users / secs:.3f} users/s ({secs:.1f} s), NDCG@10 {ev.results.overall['NDCG@10']:.4f}")
        if mode not in best or secs < best[mode][0]:
            best[mode] = (secs, ev)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1]
    records = []
    for mode, (secs, ev) in best.items():
        records.append(
            {
                "task": "speed",
                "dataset": split.dataset.name,
                "model": f"palr-zeroshot-{mode}",
                "mode": mode,
                "lm": args.lm,
                "users": args.users,
                "n_candidates": args.n_candidates,
                "protocol": "full-loo",
                "device": "cpu",
                "seeds": [0],
                "commit": git_commit(),
                "date": time.strftime("%Y-%m-%d"),
                "metrics": {
                    "users_per_second": args.users / secs,
                    "seconds": secs,
                    "speedup_vs_likelihood": best["likelihood"][0] / secs,
                    "NDCG@10": ev.results.overall["NDCG@10"],
                },
                "note": f"zero-shot, popularity candidates, rule-based profiles, {args.threads} torch thread(s), "
                f"{args.batch} users per verbalizer pass; best of 2 alternating runs; load average {load}",
            }
        )
    merge_bench("palr_rankers", records, lambda r: (r["dataset"], r["lm"], r["mode"]), _markdown, results_dir=RESULTS)
    print(_markdown(records))


if __name__ == "__main__":
    main()
