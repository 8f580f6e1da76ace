"""PALR ranking speed: likelihood (one pass per candidate title) vs verbalizer (one pass per batch of users) in
float32 and in bfloat16 (``lm_dtype``), side by side in one process, on the same users, candidates, prompts and LM.

    python bench/bench_palr_rankers.py --dataset ml-1m --users 32 --n-candidates 20 --context "idle machine"

Zero-shot SmolLM2-135M-Instruct (the speed does not depend on fine-tuning), rule-based profiles, a popularity
retriever (its candidates cost nothing, so the timing is the LM's). Each mode runs twice in alternating order and
the faster of its two runs counts (this machine is shared: the slower run is the one a neighbour disturbed).
bfloat16 changes the scores slightly, so its rankings are compared per user with the float32 verbalizer's: the
share of users with the same top-1, the mean overlap of the two top-10s, and the mean Kendall tau of the two full
candidate orders (likelihood ranking gets the same columns, for scale). Writes ``bench/results/palr_rankers.json``
and ``.md``. NDCG@10 is printed for information only: zero-shot on a few users, it says nothing about fine-tuned
quality.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import tempfile
import time
from itertools import combinations
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.report import git_commit, merge_bench
from padrec.models.simple import Pop
from padrec.palr.config import load_palr_config
from padrec.palr.lm import CausalLM, load_causal_lm
from padrec.palr.pipeline import evaluate_palr, ranking_lm
from padrec.palr.profile import read_jsonl

RESULTS = Path(__file__).resolve().parent / "results"


#: mode label -> (PALR ranking mode, lm_dtype)
MODES = {"likelihood": ("likelihood", "float32"), "verbalizer": ("verbalizer", "float32"),
         "verbalizer-bf16": ("verbalizer", "bfloat16")}  # fmt: skip


def _markdown(records: list[dict]) -> str:
    lines = [
        "# PALR ranking speed: likelihood vs verbalizer, float32 and bfloat16 (same users, candidates and LM, one "
        "process)",
        "",
        "Agreement columns compare each user's ranking with the float32 verbalizer's (the reference, —) for the same "
        "candidates (top-1: same first pick; overlap@10: shared share of the two top-10s; tau: Kendall tau of the "
        "full orders). bfloat16 should agree closely; likelihood is another method, shown for scale.",
        "",
        "| dataset | lm | mode | users | candidates | users/s | speed-up | top-1 agree | overlap@10 | tau "
        "| NDCG@10 (info) | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        m = r["metrics"]
        agree = [m.get(k) for k in ("top1_agreement", "overlap@10", "kendall_tau")]
        cells = " | ".join("—" if v is None else f"{v:.3f}" for v in agree)
        lines.append(
            f"| {r['dataset']} | {r['lm']} | {r['mode']} | {r['users']} | {r['n_candidates']} | "
            f"{m['users_per_second']:.3f} | {m['speedup_vs_likelihood']:.1f}x | {cells} | {m['NDCG@10']:.4f} | "
            f"{r['note']} |"
        )
    return "\n".join(lines) + "\n"


def _kendall_tau(a: list[int], b: list[int]) -> float:
    """Kendall tau of two orders of the same items (1: identical, -1: reversed)."""
    pos = {item: k for k, item in enumerate(b)}
    pairs = list(combinations([pos[i] for i in a], 2))
    if not pairs:
        return 1.0
    return sum(1 if x < y else -1 for x, y in pairs) / len(pairs)


def agreement(orders: dict[int, list[int]], ref: dict[int, list[int]], k: int = 10) -> dict[str, float]:
    """Per-user agreement of ``orders`` with ``ref`` (user -> model order of the same candidates), averaged."""
    users = sorted(ref)
    if sorted(orders) != users:
        raise ValueError(f"the two rankings cover different users ({len(orders)} vs {len(ref)})")
    return {
        "top1_agreement": sum(orders[u][0] == ref[u][0] for u in users) / len(users),
        "overlap@10": sum(len(set(orders[u][:k]) & set(ref[u][:k])) / min(k, len(ref[u])) for u in users) / len(users),
        "kendall_tau": sum(_kendall_tau(orders[u], ref[u]) for u in users) / len(users),
    }


def _orders(run_dir: Path) -> dict[int, list[int]]:
    """Each user's model order, from the ranking cache the evaluation wrote (one JSONL file per run dir)."""
    files = list((run_dir / "eval").glob("*.ranking-*.jsonl"))
    if len(files) != 1:
        raise RuntimeError(f"expected one ranking file in {run_dir / 'eval'}, found {len(files)}")
    return {int(r["user"]): [int(i) for i in r["items"]] for r in read_jsonl(files[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--n-candidates", type=int, default=20)
    ap.add_argument("--lm", default="smollm2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8, help="users per forward pass (verbalizer)")
    ap.add_argument("--context", default="", help="what else ran on the machine (goes into every record's note)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    split = leave_one_out(load_dataset(args.dataset))
    retriever = Pop().fit(split)
    lm = load_causal_lm(args.lm)
    half = CausalLM(copy.deepcopy(lm.model), lm.tokenizer, lm.spec)  # a cast copy: the float32 model stays as it is
    lms = {"float32": lm, "bfloat16": ranking_lm(half, load_palr_config(split.dataset.name, {"lm_dtype": "bfloat16"}))}
    base = {"n_candidates": args.n_candidates, "max_users": args.users, "progress": False, "retriever": "pop"}
    best: dict[str, tuple[float, object, dict[int, list[int]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_palr_rankers.") as tmp:
        for run, label in enumerate([*MODES, *MODES]):
            mode, dtype = MODES[label]
            over = {**base, "mode": mode, "verbalizer_batch": args.batch, "lm_dtype": dtype}
            cfg = load_palr_config(split.dataset.name, over)
            run_dir = Path(tmp) / f"{run}-{label}"  # a fresh ranking cache per run: nothing is resumed
            t0 = time.perf_counter()
            ev = evaluate_palr(split, cfg, lms[dtype], f"palr-zeroshot-{label}", run_dir=run_dir, retriever=retriever)
            secs = time.perf_counter() - t0
            nd = ev.results.overall["NDCG@10"]
            print(f"{label:16s} {args.users / secs:.3f} users/s ({secs:.1f} s), NDCG@10 {nd:.4f}", flush=True)
            if label not in best or secs < best[label][0]:
                best[label] = (secs, ev, _orders(run_dir))
    ref = best["verbalizer"][2]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1]
    context = f"; {args.context}" if args.context else ""
    records = []
    for label, (secs, ev, orders) in best.items():
        records.append(
            {
                "task": "speed",
                "dataset": split.dataset.name,
                "model": f"palr-zeroshot-{label}",
                "mode": label,
                "lm_dtype": MODES[label][1],
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
                    **(agreement(orders, ref) if label != "verbalizer" else {}),  # it is the reference
                },
                "note": f"zero-shot, popularity candidates, rule-based profiles, {args.threads} torch thread(s), "
                f"{args.batch} users per verbalizer pass; best of 2 alternating runs; load average {load}{context}",
            }
        )
    merge_bench("palr_rankers", records, lambda r: (r["dataset"], r["lm"], r["mode"]), _markdown, results_dir=RESULTS)
    print(_markdown(records))


if __name__ == "__main__":
    main()
