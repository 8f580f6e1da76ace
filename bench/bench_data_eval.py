"""Speed of the data layer and of full-ranking evaluation on the benchmark datasets.

    python bench/bench_data_eval.py [--data-dir DIR] [--datasets ml-1m amazon-beauty] [--repeats 3]

For each dataset, times (median of ``--repeats`` runs):

- ``prepare_seconds``: ``load_dataset(name, use_cache=False)``: parse the raw files and apply the
  benchmark preprocessing;
- ``cached_load_seconds``: ``load_dataset(name)`` once its prepared copy is cached;
- ``eval_seconds``: ``Evaluator(leave_one_out(ds), Protocol()).run(model)`` (full ranking over all
  items, history masked, with the group breakdown) for a d=64 model with random item vectors whose
  user vector is the mean of the history's item vectors, over every user.

Writes ``bench/results/data_eval.json`` + ``.md``. Data comes from ``--data-dir``, else
``$PADREC_DATA``, else ``<repo>/../shared/datasets``. The prepared-data cache is a temporary folder
(``--cache-dir`` to choose one) so the run neither reads nor disturbs the user's cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from padrec.data.split import Split, leave_one_out
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.eval.report import git_commit, write_bench
from padrec.models.base import Recommender

ROOT = Path(__file__).resolve().parents[1]
#: evaluation-time targets on an idle 2-core CPU (seconds)
TARGETS = {"ml-1m": 1.0, "amazon-beauty": 5.0}
D = 64


class RandomMeanDot(Recommender):
    """Random item vectors; user = mean of its history's item vectors; score = dot product.

    Stands in for any trained dot-product model: evaluation cost depends on the shapes, not the
    weights.
    """

    name = "random-mean-d64"

    def __init__(self, d: int = D, seed: int = 0) -> None:
        super().__init__(d=d, seed=seed)
        self.items = torch.zeros(1, d)

    def fit(self, split: Split) -> RandomMeanDot:
        self._remember_items(split)
        gen = torch.Generator().manual_seed(self.config["seed"])
        self.items = torch.randn(split.n_items + 1, self.config["d"], generator=gen)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        offsets = np.zeros(len(histories), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        flat = torch.from_numpy(np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]))
        users = torch.nn.functional.embedding_bag(flat, self.items, torch.from_numpy(offsets), mode="mean")
        return users @ self.items.T


def _loader() -> Callable[..., Any]:
    try:
        from padrec.data.registry import load_dataset
    except ImportError as e:  # the data layer is written in parallel with this script
        sys.exit(f"padrec.data.registry.load_dataset is not available ({e}): nothing to benchmark yet")
    return load_dataset


def _default_data_dir() -> Path | None:
    if os.environ.get("PADREC_DATA"):
        return Path(os.environ["PADREC_DATA"])
    shared = ROOT.parent / "shared" / "datasets"
    return shared if shared.is_dir() else None


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median and all wall-clock times of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def bench_dataset(name: str, data_dir: Path | None, repeats: int) -> dict[str, Any]:
    load_dataset = _loader()
    load = os.getloadavg()[0]
    prep, prep_all, _ = timed(lambda: load_dataset(name, data_dir=data_dir, use_cache=False), repeats)
    load_dataset(name, data_dir=data_dir)  # fill the cache
    cached, cached_all, ds = timed(lambda: load_dataset(name, data_dir=data_dir), repeats)
    split = leave_one_out(ds)
    model = RandomMeanDot().fit(split)
    evaluator = Evaluator(split, Protocol())
    ev, ev_all, res = timed(lambda: evaluator.run(model, stage="test"), repeats)
    target = TARGETS.get(name)
    note = "; ".join(
        x
        for x in (
            f"median of {repeats} (all runs: prepare {_fmt(prep_all)}, cached {_fmt(cached_all)}, eval {_fmt(ev_all)})",
            f"{ds.n_users} users / {ds.n_items} items / {ds.n_interactions} interactions",
            f"eval = full ranking of {res.n_users} test users x {split.n_items + 1} columns, d={D}, "
            "history masked, with groups",
            f"target: eval < {target:g} s on 2 cores" if target else "",
            f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads",
            f"1-min load average before the run {load:.2f} (other processes share the cores when > 0.5)",
        )
        if x
    )
    return {
        "task": "speed",
        "dataset": name,
        "model": RandomMeanDot.name,
        "protocol": res.protocol,
        "metrics": {"prepare_seconds": prep, "cached_load_seconds": cached, "eval_seconds": ev},
        "device": "cpu",
        "seeds": [0],
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "note": note,
    }


def _fmt(times: list[float]) -> str:
    return "/".join(f"{t:.3f}" for t in times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="Prepared-data cache (default: a temp dir).")
    ap.add_argument("--datasets", nargs="+", default=list(TARGETS))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    data_dir = args.data_dir or _default_data_dir()
    _loader()
    with tempfile.TemporaryDirectory(prefix="padrec-bench-cache-") as tmp:
        os.environ["PADREC_CACHE"] = str(args.cache_dir or tmp)
        records = []
        for name in args.datasets:
            rec = bench_dataset(name, data_dir, args.repeats)
            m = rec["metrics"]
            print(
                f"{name}: prepare {m['prepare_seconds']:.3f} s, cached {m['cached_load_seconds']:.3f} s, "
                f"eval {m['eval_seconds']:.3f} s",
                flush=True,
            )
            records.append(rec)
    js, md = write_bench("data_eval", records, "Data preparation, cached load and full-ranking evaluation speed")
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main(sys.argv[1:])
