"""SASRec speed, side by side: padrec vs RecBole 1.2.1 on the same data, CPU, one run.

    python bench/bench_recbole.py --dataset ml-100k --epochs 200 --patience 20 --recbole-epochs 5
    python bench/bench_recbole.py --dataset amazon-beauty --epochs 20 --recbole-epochs 4 --padrec-batch-size 44

RecBole's batch is 256 *prefixes* (one training target each); padrec's is whole users (every position
is a target: ~5.9 per user on amazon-beauty). ``--padrec-batch-size`` sets padrec's users per batch so
both take about as many targets per gradient step (44 users ≈ 252 targets on amazon-beauty); it is
reported with the results. padrec also batches users of similar length (``length_buckets``), its own
way of spending less time on padding; it sees the same examples per epoch.

RecBole is installed in its own virtual environment under ``bench/.work/recbole-venv`` (never a
dependency of padrec; pins from shared/design/PEERS.md). Both libraries train SASRec with the
same max length, hidden size, layers, heads, dropout and loss (cross-entropy over all items),
each for ``--epochs`` epochs with validation NDCG@10 after every epoch. Reported per library:
seconds per training epoch, seconds to the best validation NDCG@10 within the budget, and that
NDCG; plus the per-epoch ratio. RecBole trains on every prefix of every history (one row per
interaction), padrec on every position of each user's sequence at once: the ratio is the cost of
an epoch as each library defines it, so seconds-to-best is reported too. Both children run with the
same number of threads (``--threads``); each reports its own peak RSS (``ru_maxrss`` of its process).
Records are merged into ``bench/results/speed_recbole.json`` per (dataset, model).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from padrec.data.registry import load_dataset
from padrec.eval.report import git_commit, merge_bench, write_bench

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work"
VENV = WORK / "recbole-venv"
HP = {"max_len": 50, "d": 64, "n_layers": 2, "n_heads": 1, "dropout": 0.5, "batch_size": 256, "lr": 0.001}

RUNNER = r"""
import json, sys, time
from recbole.quick_start import run_recbole
cfg = json.loads(sys.argv[1])
t0 = time.time()
res = run_recbole(model="SASRec", dataset=cfg.pop("dataset"), config_dict=cfg)
import resource
print("PADREC_BENCH_RESULT " + json.dumps({"best_valid_score": float(res["best_valid_score"]),
      "wall": time.time() - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

#: padrec's CLI in a child that prints its own peak RSS at exit (the parent's RUSAGE_CHILDREN mixes children).
PADREC_RUNNER = r"""
import resource, sys
from padrec.cli import app
try:
    app(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
print("PADREC_PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "recbole==1.2.1", "setuptools<70", "numpy<2", "pandas<2.3"], check=True)
    return py


def write_atomic_files(name: str) -> Path:
    """RecBole `.inter` from padrec's prepared dataset; the position in a history is the timestamp."""
    ds = load_dataset(name)
    folder = WORK / "recbole-data" / name
    folder.mkdir(parents=True, exist_ok=True)
    users = np.repeat(np.arange(ds.n_users), ds.lengths)
    pos = np.arange(ds.n_interactions) - np.repeat(ds.offsets[:-1], ds.lengths)
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, t in zip(users, ds.items, pos, strict=True):
            f.write(f"{u}\t{i}\t{t}\n")
    return folder.parent


def run_recbole(name: str, epochs: int, patience: int, threads: int) -> dict:
    py = ensure_venv()
    data_path = write_atomic_files(name)
    cfg = {
        "dataset": name,
        "data_path": str(data_path),
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "MAX_ITEM_LIST_LENGTH": HP["max_len"],
        "hidden_size": HP["d"],
        "inner_size": HP["d"],
        "n_layers": HP["n_layers"],
        "n_heads": HP["n_heads"],
        "hidden_dropout_prob": HP["dropout"],
        "attn_dropout_prob": HP["dropout"],
        "train_batch_size": HP["batch_size"],
        "learning_rate": HP["lr"],
        "epochs": epochs,
        "stopping_step": patience,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "device": "cpu",
        "use_gpu": False,
        "checkpoint_dir": str(WORK / "recbole-saved"),
        "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
    }
    # RecBole 1.2.1 reloads its own best checkpoint with a bare torch.load, which torch >= 2.6 refuses
    # (weights_only default): the file is the one it just wrote, so allow the full unpickler for it.
    env = {**_thread_env(threads), "CUDA_VISIBLE_DEVICES": "", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    out = subprocess.run([str(py), "-c", RUNNER, json.dumps(cfg)], capture_output=True, text=True, env=env, cwd=WORK)
    log = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"RecBole failed:\n{log[-4000:]}")
    train_t = [float(x) for x in re.findall(r"epoch \d+ training \[time: ([\d.]+)s", log)]
    eval_t = [float(x) for x in re.findall(r"epoch \d+ evaluating \[time: ([\d.]+)s", log)]
    scores = [float(x) for x in re.findall(r"valid_score: ([\d.]+)", log)]
    rss = json.loads(log.split("PADREC_BENCH_RESULT ", 1)[1].splitlines()[0])["peak_rss_mb"]
    return {**_summarise(train_t, eval_t, scores), "peak_rss_mb": rss}


def _thread_env(threads: int) -> dict[str, str]:
    n = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def _summarise(train_t: list[float], eval_t: list[float], scores: list[float]) -> dict:
    best = int(np.argmax(scores))
    elapsed = np.cumsum(np.asarray(train_t) + np.asarray(eval_t[: len(train_t)]))
    return {
        "seconds_per_epoch": float(np.mean(train_t)),
        "seconds_to_best": float(elapsed[best]),
        "NDCG@10": float(scores[best]),
        "best_epoch": best + 1,
        "epochs": len(train_t),
    }


def seconds_to_reach(timing: dict, target: float) -> float | None:
    """padrec's elapsed seconds (training + validation) until its valid NDCG@10 first reaches ``target``."""
    elapsed = 0.0
    for train_s, valid_s, ndcg in zip(timing["train"], timing["valid"], timing["ndcg"], strict=False):
        elapsed += train_s + valid_s
        if ndcg is not None and ndcg >= target:
            return elapsed
    return None


def equal_quality(theirs: dict, timing: dict) -> dict:
    """The fair speed number: padrec's time to RecBole's best NDCG@10 against RecBole's time to it."""
    t = seconds_to_reach(timing, theirs["NDCG@10"])
    return {"seconds_to_recbole_best": t, "speedup_to_equal_ndcg": theirs["seconds_to_best"] / t if t else None}


def run_padrec(name: str, epochs: int, patience: int, threads: int, batch_size: int) -> dict:
    """padrec's SASRec in a fresh process (same threads as RecBole), timed per epoch from its CSV log."""
    run_dir = WORK / "speed-runs" / name / "sasrec"
    overrides = [
        f"model.max_len={HP['max_len']}",
        f"model.d={HP['d']}",
        f"model.n_layers={HP['n_layers']}",
        f"model.n_heads={HP['n_heads']}",
        f"model.dropout={HP['dropout']}",
        f"batch_size={batch_size}",
        "length_buckets=true",
        f"lr={HP['lr']}",
        f"max_epochs={epochs}",
        f"patience={patience}",
        "progress=false",
    ]
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cmd = [
        sys.executable,
        "-c",
        PADREC_RUNNER,
        "train",
        "--model",
        "sasrec",
        "--dataset",
        name,
        "--run-dir",
        str(run_dir),
        "--no-evaluate",
        *overrides,
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=_thread_env(threads))
    if out.returncode != 0:
        raise RuntimeError(f"padrec failed:\n{(out.stdout + out.stderr)[-4000:]}")
    wall = time.perf_counter() - t0
    rss = float(out.stdout.split("PADREC_PEAK_RSS_MB", 1)[1].split()[0])
    timing = json.loads((run_dir / "epoch_times.json").read_text())
    return {**_summarise(timing["train"], timing["valid"], timing["ndcg"]), "wall": wall, "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--epochs", type=int, default=5, help="epoch budget per library")
    ap.add_argument("--recbole-epochs", type=int, default=None, help="RecBole's budget (default: --epochs)")
    ap.add_argument("--patience", type=int, default=None, help="early stopping (default: none within the budget)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each child")
    ap.add_argument(
        "--padrec-batch-size",
        type=int,
        default=HP["batch_size"],
        help="padrec's users per batch (RecBole's batch counts prefixes: pick it so targets per step match)",
    )
    ap.add_argument(
        "--rescore", action="store_true", help="recompute derived numbers of a finished run's records, no training"
    )
    args = ap.parse_args()
    path = ROOT / "results" / "speed_recbole.json"
    if args.rescore:
        rescore(path, args.dataset)
        return
    patience = args.patience or args.epochs
    ours = run_padrec(args.dataset, args.epochs, patience, args.threads, args.padrec_batch_size)
    print(f"padrec: {ours}", flush=True)
    rb_epochs = args.recbole_epochs or args.epochs
    theirs = run_recbole(args.dataset, rb_epochs, min(patience, rb_epochs), args.threads)
    print(f"recbole: {theirs}", flush=True)
    ratio = theirs["seconds_per_epoch"] / ours["seconds_per_epoch"]
    ours.update(equal_quality(theirs, _padrec_timing(args.dataset)))
    budget = (
        f"padrec up to {args.epochs} epochs, early stopping after {patience} without a better valid NDCG@10"
        if patience < args.epochs
        else f"padrec {args.epochs} epochs (a budget, not convergence)"
    ) + f"; RecBole {rb_epochs} epochs ({theirs['epochs']} run)"
    note = (
        f"CPU ({os.cpu_count()} cores, {args.threads} torch thread per child, one after the other in one run; "
        f"other jobs may share the machine); {budget}; hyper-parameters {HP}, padrec batch "
        f"{args.padrec_batch_size} users ({_targets_per_batch(args.dataset, args.padrec_batch_size):.0f} training "
        f"targets) with length buckets; "
        f"speed-up per epoch = {ratio:.2f}x (an epoch is one pass over users for padrec, over every prefix for "
        f"RecBole); to each library's own best = {theirs['seconds_to_best'] / ours['seconds_to_best']:.2f}x"
    )
    base = {
        "task": "speed",
        "dataset": args.dataset,
        "protocol": "full-loo",
        "device": "cpu",
        "seeds": [42],
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "note": note,
    }
    records = [
        {
            **base,
            "model": "sasrec",
            "metrics": {**ours, "speedup_vs_recbole": ratio},
            "note": note + _equal_note(ours, theirs),
        },
        {**base, "model": "recbole-sasrec", "metrics": theirs},
    ]
    merged = merge_bench("speed_recbole", records, lambda r: r["dataset"], markdown)
    print(markdown(merged))


def _equal_note(ours: dict, theirs: dict) -> str:
    if not ours.get("seconds_to_recbole_best"):
        return "; at equal NDCG@10: padrec never reached RecBole's best within its budget"
    return (
        f"; at equal NDCG@10 (RecBole's best, {theirs['NDCG@10']:.4f}): padrec {ours['seconds_to_recbole_best']:.0f} s "
        f"vs RecBole {theirs['seconds_to_best']:.0f} s = {ours['speedup_to_equal_ndcg']:.2f}x"
    )


def _targets_per_batch(name: str, users: int) -> float:
    """Mean training targets in a padrec batch of ``users`` (positions 2..n-2 of each history, capped)."""
    lengths = load_dataset(name).lengths
    return float(np.clip(lengths - 3, 0, HP["max_len"]).mean() * users)


def _padrec_timing(name: str) -> dict:
    return json.loads((WORK / "speed-runs" / name / "sasrec" / "epoch_times.json").read_text())


def rescore(path: Path, dataset: str) -> None:
    records = json.loads(path.read_text())["records"]
    by = {r["model"]: r for r in records if r["dataset"] == dataset}
    if {"sasrec", "recbole-sasrec"} - set(by):
        raise SystemExit(f"{path}: no finished padrec + RecBole records for {dataset}")
    ours, theirs = by["sasrec"]["metrics"], by["recbole-sasrec"]["metrics"]
    ours.update(equal_quality(theirs, _padrec_timing(dataset)))
    by["sasrec"]["note"] = by["sasrec"]["note"].split("; at equal NDCG@10")[0] + _equal_note(ours, theirs)
    write_bench("speed_recbole", records, markdown(records))
    print(markdown(records))


def markdown(records: list[dict]) -> str:
    md = [
        "# SASRec speed: padrec vs RecBole 1.2.1 (same data, hyper-parameters and loss; CPU)",
        "",
        "| dataset | model | s/epoch | s to best | valid NDCG@10 | best epoch | epochs | peak RSS MB "
        "| speed-up/epoch | padrec s to RecBole's best | speed-up at equal NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["dataset"], r["model"] != "sasrec")):
        m = r["metrics"]
        up = f"{m['speedup_vs_recbole']:.2f}x" if "speedup_vs_recbole" in m else ""
        match = f"{m['seconds_to_recbole_best']:.1f}" if m.get("seconds_to_recbole_best") else ""
        eq = f"{m['speedup_to_equal_ndcg']:.2f}x" if m.get("speedup_to_equal_ndcg") else ""
        md.append(
            f"| {r['dataset']} | {r['model']} | {m['seconds_per_epoch']:.1f} | {m['seconds_to_best']:.1f} | "
            f"{m['NDCG@10']:.4f} | {m['best_epoch']} | {m['epochs']} | {m.get('peak_rss_mb', float('nan')):.0f} "
            f"| {up} | {match} | {eq} |"
        )
    md += [""] + [f"- {r['dataset']}: {r['note']}" for r in records if r["model"] == "sasrec"]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
