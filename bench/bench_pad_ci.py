"""How sure is a PAD change? Paired bootstrap over test users of one finished PAD run against its own backbone.

    python bench/bench_pad_ci.py --dataset amazon-beauty --run-dir bench/.work/pad/amazon-beauty/sasrec-seed0

Both models rank every test user's item (full ranking, history masked, the Evaluator's protocol); the users are
resampled with replacement (``--resamples``, seeded) and each resample's relative change of NDCG@10,
``mean(PAD) / mean(backbone) - 1``, is computed on the same users for both models, overall and for the cold group
(bins 8-10 + unseen). The 95% interval is the 2.5th-97.5th percentile. It measures the noise of the test users
only: a second backbone (another seed) moves the numbers as well, which this interval does not include. Writes
``bench/results/pad_ci.json`` and ``.md`` (one record per dataset and run name).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.evaluator import Evaluator
from padrec.eval.metrics import ndcg_per_user
from padrec.eval.report import git_commit, merge_bench
from padrec.models.base import Recommender

RESULTS = Path(__file__).resolve().parent / "results"


def paired_change(pad: np.ndarray, base: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """Relative change of the mean of ``pad`` over the mean of ``base`` (paired per user) and its bootstrap 95%
    interval; resamples whose backbone mean is 0 are skipped."""
    rng = np.random.default_rng(seed)
    p, b = np.empty(resamples), np.empty(resamples)
    for lo in range(0, resamples, 100):  # 100 resamples at a time: a [100, users] index, not [resamples, users]
        idx = rng.integers(0, len(pad), size=(min(100, resamples - lo), len(pad)))
        p[lo : lo + len(idx)], b[lo : lo + len(idx)] = pad[idx].mean(axis=1), base[idx].mean(axis=1)
    ok = b > 0
    changes = p[ok] / b[ok] - 1
    lo, hi = np.percentile(changes, [2.5, 97.5])
    return {
        "change": float(pad.mean() / base.mean() - 1) if base.mean() > 0 else float("nan"),
        "low": float(lo),
        "high": float(hi),
        "p_worse": float((changes < 0).mean()),
        "users": len(pad),
    }


def run(dataset: str, run_dir: Path, resamples: int, seed: int) -> dict:
    split = leave_one_out(load_dataset(dataset))
    ev = Evaluator(split)
    base = ndcg_per_user(ev.ranks(Recommender.load(run_dir / "pretrain"), "test"), 10)
    pad = ndcg_per_user(ev.ranks(Recommender.load(run_dir / "pad"), "test"), 10)
    cold = ev.group_labels("test")["cold"]
    return {
        "task": "ci",
        "dataset": dataset,
        "run": run_dir.name,
        "protocol": "full-loo",
        "metric": "NDCG@10",
        "overall": paired_change(pad, base, resamples, seed),
        "cold": paired_change(pad[cold], base[cold], resamples, seed),
        "resamples": resamples,
        "seed": seed,
        "commit": git_commit(),
    }


def _interval(d: dict) -> str:
    return f"{100 * d['change']:+.1f}% [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def markdown(records: list[dict]) -> str:
    lines = [
        "Paired bootstrap over test users (NDCG@10, PAD run vs its own backbone; 95% interval of the relative "
        "change; test-user noise only, not backbone-seed noise):\n",
        "| dataset | run | overall change [95%] | cold change [95%] | cold users | P(cold change < 0) |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        o, c = r["overall"], r["cold"]
        lines.append(
            f"| {r['dataset']} | {r['run']} | {_interval(o)} | {_interval(c)} | {c['users']} | {c['p_worse']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--run-dir", type=Path, nargs="+", required=True, help="finished PAD run directories")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    for d in args.run_dir:
        if not (d / "pretrain" / "model.pt").exists() or not (d / "pad" / "model.pt").exists():
            raise SystemExit(f"{d}: not a finished PAD run (expected pretrain/model.pt and pad/model.pt)")
    new = [run(args.dataset, d, args.resamples, args.seed) for d in args.run_dir]
    print(markdown(new))
    merge_bench("pad_ci", new, lambda r: (r["dataset"], r["run"]), markdown, results_dir=args.results)


if __name__ == "__main__":
    main()
