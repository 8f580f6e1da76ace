"""Training-step speed of random vs length-bucketed batches, side by side in one process.

    python bench/bench_batching.py --dataset amazon-beauty --model sasrec --batches 40 --rounds 3

Both loaders hold the same users and the same model; each round times ``--batches`` optimiser steps
with one loader, then with the other (alternating which goes first), and the median per-step time of
each is reported with their ratio and the share of padding positions the model still processes.
The accuracy side (a full training run with ``length_buckets=true`` next to the default run) is
added to the record as ``parity`` text. Results: ``bench/results/batching.json`` / ``.md``.

``--defaults`` compares the training defaults before and after max_len was derived from the data, on a
dataset given as own files (so no dataset YAML applies), with real ``fit`` runs of ``--epochs`` epochs each:

    padrec data export amazon-beauty /tmp/beauty
    python bench/bench_batching.py --defaults --dataset /tmp/beauty/interactions.csv \
        --items /tmp/beauty/items.csv --epochs 4

``before``: max_len 200 (SASRec's old fixed default), random batches padded to max_len; ``after``: today's
defaults (max_len from the 99th percentile of training history lengths, random batches cropped to their longest
history); ``after-buckets``: the same with length buckets (opt-in), to show what they add and cost.
Each record names users, seed, epochs, seconds per epoch (training only) and validation NDCG@10 per epoch.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
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


def defaults_markdown(records: list[dict]) -> list[str]:
    """The before/after defaults table (records with ``task == "defaults"``)."""
    rows = [r for r in records if r.get("task") == "defaults"]
    if not rows:
        return []
    lines = [
        "",
        "## Training defaults before and after (own-data files, so no dataset YAML applies)",
        "",
        "| dataset | model | config | max_len | buckets | cropped | s/epoch | speed-up | padding | "
        "valid NDCG@10 per epoch | best | users | seed | epochs | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for name, c in r["configs"].items():
            per_epoch = " / ".join(f"{v:.4f}" for v in c["val_ndcg10"])
            if r["epochs"] == "early stopping":
                per_epoch = f"{len(c['val_ndcg10'])} epochs, best at epoch {c['best_epoch']}"
            speedup = f"{c['speedup']:.1f}x" if c.get("speedup") else "–"
            lines.append(
                f"| {r['dataset']} | {r['model']} | {name} | {c['max_len']} | {c['length_buckets']} | {c['cropped']} | "
                f"{c['seconds_per_epoch']:.1f} | {speedup} | {c['padding_share']:.0%} | {per_epoch} | "
                f"{max(c['val_ndcg10']):.4f} | {r['users']} | {r['seeds'][0]} | {r['epochs']} | {c['load']} |"
            )
    lines += ["", *(f"- {r['note']}" for r in rows)]
    return lines


def markdown(records: list[dict]) -> str:
    records_speed = [r for r in records if r.get("task") != "defaults"]
    extra = defaults_markdown(records)
    records = records_speed
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
    return "\n".join(lines + extra) + "\n"


def load_average() -> str:
    """The 1-minute load average (the CPU is shared: the record says how busy it was)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def padding_share(loader, n: int = 40) -> float:
    """Share of the positions in the first ``n`` batches of ``loader`` that are padding."""
    pad = total = 0
    for inp, _ in itertools.islice(iter(loader), n):
        pad += int((inp == 0).sum())
        total += inp.numel()
    return pad / total


def sample_users(path: Path, n: int, seed: int) -> Path:
    """A seeded sample of ``n`` users of an interactions CSV (all their rows), written next to the bench's work."""
    import pandas as pd

    df = pd.read_csv(path)
    user = df.columns[0]
    users = pd.Series(df[user].unique()).sample(n=n, random_state=seed)
    out = Path(__file__).resolve().parent / ".work" / "batching-defaults" / f"{path.parent.name}-{n}users"
    out.mkdir(parents=True, exist_ok=True)
    target = out / "interactions.csv"
    df[df[user].isin(set(users))].to_csv(target, index=False)
    return target


def run_defaults(args: argparse.Namespace) -> dict:
    """``fit`` with the old and the new defaults, one after the other in this process (see the module doc)."""
    source = Path(args.dataset)
    if args.sample_users:
        source = sample_users(source, args.sample_users, args.sample_seed)
    ds = load_dataset(str(source), items=args.items)
    split = leave_one_out(ds)
    cls = get_model_class(args.model)
    lengths = [len(s) for s in split.train_sequences()]
    work = Path(__file__).resolve().parent / ".work" / "batching-defaults" / f"{ds.name}-{args.model}"
    budget = {} if args.converge else {"max_epochs": args.epochs, "patience": args.epochs}
    fixed = {
        **budget,
        "seed": args.seed,
        "progress": False,
        "logger": ["csv"],
    }
    configs = {
        "before": ({"max_len": cls.config_cls.MAX_LEN_CAP, "length_buckets": False}, False),
        "after": ({}, True),
        "after-buckets": ({"length_buckets": True}, True),
    }
    out = {}
    for name in args.configs:
        over, crop = configs[name]
        params, tcfg = resolve(args.model, cls.config_cls, ds.name, {**over, **fixed})
        rec = cls(params=params.model_dump(), train=tcfg.model_dump())
        if not crop:  # the loader before cropping was always on: every batch padded to max_len

            def uncropped(sp, rec=rec):
                loader = sequence_loader(rec, sp)
                loader.collate_fn.crop = False
                return loader

            rec.train_loader = uncropped
        load = load_average()
        run_dir = work / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        rec.fit(split, run_dir=run_dir)
        wall = time.perf_counter() - t0
        times = json.loads((run_dir / "epoch_times.json").read_text())
        torch.manual_seed(0)
        out[name] = {
            "max_len": rec.max_len,
            "length_buckets": tcfg.length_buckets,
            "cropped": crop,
            "seconds_per_epoch": statistics.mean(times["train"]),
            "seconds_per_epoch_each": times["train"],
            "validation_seconds_each": times["valid"],
            "val_ndcg10": times["ndcg"],
            "best_val_ndcg10": max(times["ndcg"]),
            "best_epoch": times["ndcg"].index(max(times["ndcg"])) + 1,
            "epochs_run": len(times["ndcg"]),
            "wall_seconds": wall,
            "padding_share": padding_share(rec.train_loader(split)),
            "load": f"{load} -> {load_average()}",
        }
        print(name, json.dumps(out[name]), flush=True)
    base = out.get("before", {}).get("seconds_per_epoch")
    for c in out.values():
        c["speedup"] = base / c["seconds_per_epoch"] if base else None
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    budget_text = (
        "trained to early stopping with the trainer's defaults (patience 10 validations, at most 200 epochs)"
        if args.converge
        else f"{args.epochs} epochs each (fixed budget, no early stopping)"
    )
    return {
        "task": "defaults",
        "dataset": ds.name,
        "model": args.model,
        "protocol": "full ranking, leave-one-out, validation",
        "device": "cpu",
        "seeds": [args.seed],
        "epochs": "early stopping" if args.converge else args.epochs,
        "users": int(ds.n_users),
        "items": int(split.n_items),
        "median_train_history": float(statistics.median(lengths)),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "configs": out,
        "note": f"{ds.name} loaded as own files from {Path(args.dataset).name} (no dataset YAML applies)"
        f"{args.note}; {args.model}, seed {args.seed}, {budget_text}, "
        f"validated every epoch on all users; configs trained one after the other in one process, "
        f"{args.threads} torch thread on a 2-core CPU shared with other jobs ({uptime} at the end); s/epoch is "
        "training only (mean over epochs); padding share over the first 40 batches",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--defaults", action="store_true", help="old vs new training defaults (see above)")
    ap.add_argument("--items", default=None, help="items.csv of an own-data --dataset")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--configs", nargs="+", default=["after-buckets", "after", "before"])
    ap.add_argument("--converge", action="store_true", help="--defaults: train to early stopping, not --epochs")
    ap.add_argument("--sample-users", type=int, default=0, help="--defaults: a seeded sample of this many users")
    ap.add_argument("--sample-seed", type=int, default=42, help="--defaults: the user sample's seed (not training's)")
    ap.add_argument("--note", default="", help="appended to the record's note, e.g. where the files came from")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.defaults:
        record = run_defaults(args)
        old = json.loads(RESULTS.read_text())["records"] if RESULTS.exists() else []

        def key(r: dict) -> tuple:  # a run of other epochs or configs is another record
            configs = sorted(r.get("configs", {}))
            return r.get("task"), r["dataset"], r["model"], r.get("epochs"), configs, r.get("users"), r.get("seeds")

        records = [r for r in old if key(r) != key(record)]
        write_bench("batching", [*records, record], markdown([*records, record]))
        print(markdown([*records, record]))
        return

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
