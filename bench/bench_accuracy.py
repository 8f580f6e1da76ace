"""Reproduction benchmark: train baselines to convergence, test once, compare with published rows.

    python bench/bench_accuracy.py --dataset ml-1m --model sasrec [key=value ...]

Each call trains one (model, dataset) pair (early stopping on validation NDCG@10), evaluates the best
checkpoint under the full-ranking leave-one-out protocol, and merges its record into
``bench/results/accuracy.json`` (+ ``accuracy.md``), replacing an older record of the same pair.
Also records peak RSS and seconds per epoch of the training process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.eval.report import git_commit, merge_bench
from padrec.models import Recommender, get_model_class
from padrec.train.config import parse_overrides, resolve

ROOT = Path(__file__).resolve().parent

#: (dataset, model) -> (HR@10, NDCG@10, source); full ranking, leave-one-out.
PUBLISHED: dict[tuple[str, str], tuple[float, float, str]] = {
    ("ml-1m", "sasrec"): (0.315, 0.182, "SASRec+CE, Klenitskiy & Vasilev, RecSys 2023"),
    ("ml-1m", "bert4rec"): (0.284, 0.154, "BERT4Rec, Klenitskiy & Vasilev, RecSys 2023"),
    ("ml-1m", "gru4rec"): (0.1017, 0.0468, "PALR paper, Table 2"),
    ("ml-1m", "caser"): (0.1338, 0.0614, "PALR paper, Table 2"),
    ("ml-1m", "bpr"): (0.0354, 0.0158, "PALR paper, Table 2"),
    ("ml-1m", "ncf"): (0.0313, 0.0143, "PALR paper, Table 2"),
    ("amazon-beauty", "sasrec"): (0.0921, 0.0531, "SASRec+sampled softmax, eSASRec benchmark"),
    ("amazon-beauty", "gru4rec"): (0.0283, 0.0137, "S3Rec paper"),
    ("amazon-beauty", "caser"): (0.0347, 0.0176, "S3Rec paper"),
    ("amazon-beauty", "bpr"): (0.0299, 0.0122, "PALR paper, Table 2"),
    ("amazon-beauty", "ncf"): (0.0293, 0.0130, "PALR paper, Table 2"),
    ("amazon-beauty", "pop"): (0.0152, 0.0068, "S3Rec paper (counts test items: leak)"),
}


def markdown(records: list[dict]) -> str:
    lines = [
        "| dataset | model | protocol | HR@10 | NDCG@10 | published HR@10 / NDCG@10 | source | epochs | s/epoch "
        "| device |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["dataset"], r["model"])):
        m = r["metrics"]
        pub = PUBLISHED.get((r["dataset"], r["model"]))
        pub_s = f"{pub[0]:.4f} / {pub[1]:.4f}" if pub else "–"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['protocol']} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} | {pub_s} "
            f"| {pub[2] if pub else ''} | {m.get('epochs', '–')} | {m.get('seconds_per_epoch', float('nan')):.1f} "
            f"| {r['device']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument("--note", default="")
    ap.add_argument("--evaluate-only", action="store_true", help="Test the run already in --run-dir.")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    split = leave_one_out(load_dataset(args.dataset))
    cls = get_model_class(args.model)
    overrides = parse_overrides(args.overrides)
    run_dir = args.run_dir or ROOT / ".work" / "runs" / args.dataset / args.model
    t0 = time.perf_counter()
    if args.evaluate_only:
        rec = Recommender.load(run_dir)
        info = json.loads((run_dir / "train.json").read_text())
    elif hasattr(cls, "config_cls"):
        params, tcfg = resolve(args.model, cls.config_cls, split.dataset.name, overrides)
        rec = cls(params=params.model_dump(), train=tcfg.model_dump())
        rec.fit(split, run_dir=run_dir, resume=(run_dir / "checkpoints" / "last.ckpt").exists())
        info = json.loads((run_dir / "train.json").read_text())
    else:
        rec = cls(**overrides).fit(split)
        info = {"epochs": 0, "train_seconds": time.perf_counter() - t0}
    res = Evaluator(split, Protocol()).run(rec, stage="test")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    epochs = max(int(info.get("epochs") or 0), 1)
    rec_ = res.record(task="accuracy", device=device, seeds=[rec.config.get("train", {}).get("seed", 0)])
    rec_["model"] = args.model
    rec_["metrics"].update(
        {
            "epochs": int(info.get("epochs") or 0),
            "best_epoch": info.get("best_epoch"),
            "seconds_per_epoch": float(info.get("seconds_per_epoch") or info["train_seconds"] / epochs),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    pub = PUBLISHED.get((args.dataset, args.model))
    rec_["note"] = "; ".join(
        x
        for x in (
            args.note,
            f"published {pub[0]}/{pub[1]} ({pub[2]})" if pub else "",
            f"config {json.dumps(rec.config, default=str)}",
        )
        if x
    )
    rec_["commit"] = git_commit()
    merge_bench("accuracy", [rec_], lambda r: (r["dataset"], r["model"]), markdown)
    print(res.table())


if __name__ == "__main__":
    main(sys.argv[1:])
