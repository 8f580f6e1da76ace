"""Training-step speed of random vs length-bucketed batches, side by side in one process.

    python bench/bench_batching.py --dataset amazon-beauty --model sasrec --batches 40 --rounds 3

Both loaders hold the same users and the same model; each round times ``--batches`` optimiser steps
with one loader, then with the other (alternating which goes first), and the median per-step time of
each is reported with their ratio and the share of padding positions the model still processes.
The accuracy side (a full training run with ``length_buckets=true`` next to the default run) is
added to the record as ``parity`` text. Results: ``bench/results/batching.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.report import git_commit, write_bench
from padrec.models import get_model_class
from padrec.train.config import resolve
from padrec.train.trainer import sequence_loader

RESULTS = Path(__file__).resolve().parent / "results" / "batching.json"


def time_steps(rec, loader, n: int, opt: torch.optim.Optimizer) -> tuple[float, float]:
    """Seconds per step over ``n`` steps, and the share of processed positions that were padding."""
    pad = total = 0
    t0 = time.perf_counter()
    for inp, tgt in itertools.islice(iter(loader), n):
        loss, _ = rec.training_loss((inp, tgt))
        opt.zero_grad()
        loss.backward()
        opt.step()
        pad += int((inp == 0).sum())
        total += inp.numel()
    return (time.perf_counter() - t0) / n, pad / total


def markdown(records: list[dict]) -> str:
    lines = [
        "# Random vs length-bucketed training batches (same model, same process)",
        "",
        "| dataset | model | s/step random | s/step buckets | speed-up | padding random | padding buckets |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        m = r["metrics"]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {m['seconds_per_step_random']:.3f} | "
            f"{m['seconds_per_step_buckets']:.3f} | {m['speedup']:.2f}x | {m['padding_share_random']:.0%} | "
            f"{m['padding_share_buckets']:.0%} |"
        )
    parity = [r for r in records if "parity" in r]
    if parity:
        lines += ["", "Accuracy parity (full training to early stopping, test, full ranking):", ""]
        lines += [f"- {r['dataset']}: {r['parity']}" for r in parity]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    split = leave_one_out(load_dataset(args.dataset))
    cls = get_model_class(args.model)
    params, tcfg = resolve(args.model, cls.config_cls, split.dataset.name, {})
    rec = cls(params=params.model_dump(), train=tcfg.model_dump())
    rec._remember_items(split)
    rec._build()
    rec.net.train()
    opt = torch.optim.AdamW(rec.net.parameters(), lr=tcfg.lr)
    loaders = {}
    for mode in ("random", "buckets"):
        rec.train_cfg = tcfg.model_copy(update={"length_buckets": mode == "buckets"})
        loaders[mode] = sequence_loader(rec, split)
    rec.train_cfg = tcfg
    time_steps(rec, loaders["random"], 3, opt)  # warm-up
    times: dict[str, list[float]] = {"random": [], "buckets": []}
    padding: dict[str, list[float]] = {"random": [], "buckets": []}
    for r in range(args.rounds):
        for mode in ("random", "buckets") if r % 2 == 0 else ("buckets", "random"):
            s, p = time_steps(rec, loaders[mode], args.batches, opt)
            times[mode].append(s)
            padding[mode].append(p)
    med = {m: statistics.median(v) for m, v in times.items()}
    record = {
        "task": "speed",
        "dataset": args.dataset,
        "model": f"{args.model}-length-buckets",
        "protocol": "n/a",
        "device": "cpu",
        "seeds": [0],
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "metrics": {
            "seconds_per_step_random": med["random"],
            "seconds_per_step_buckets": med["buckets"],
            "speedup": med["random"] / med["buckets"],
            "padding_share_random": statistics.mean(padding["random"]),
            "padding_share_buckets": statistics.mean(padding["buckets"]),
        },
        "note": f"{args.batches} training steps per mode and round, {args.rounds} rounds alternating, median; "
        f"batch {tcfg.batch_size}, max_len {params.max_len}; {args.threads} torch thread(s) on a shared CPU",
    }
    old = json.loads(RESULTS.read_text())["records"] if RESULTS.exists() else []
    same = [r for r in old if (r["dataset"], r["model"]) == (args.dataset, record["model"])]
    if same and "parity" in same[0]:  # the accuracy check comes from a separate training run: keep it
        record["parity"] = same[0]["parity"]
    records = [r for r in old if r not in same] + [record]
    write_bench("batching", records, markdown(records))
    print(markdown(records))


if __name__ == "__main__":
    main()
