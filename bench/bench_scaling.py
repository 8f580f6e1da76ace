"""How cost grows with the data: preparation, training, full-ranking evaluation and serving, 1e5 -> 5e7 rows.

    python bench/bench_scaling.py                                  # the default grid, every stage
    python bench/bench_scaling.py --sizes 1e5:1e4,1e6:1e5          # interactions:items pairs
    python bench/bench_scaling.py --sizes 5e7:1e6 --stages prep    # one size, one stage (records accumulate)
    python bench/bench_scaling.py --plot-only                      # redraw scaling.md/.png from scaling.json

Data: seeded synthetic interaction logs with realistic skew (below), written as CSV into ``bench/.work``
(gitignored) and read through padrec's own-data path ``load_dataset(path)``. Each measurement runs in a fresh
child process so that its peak memory (``ru_maxrss``) is its own; every record names its sizes, seed, threads
and the machine load (``uptime``) just before it ran.

- ``prep``: ``load_dataset(csv)`` with a cold cache (parse, prepare, save the cache entry), then the cached
  load; peak RSS. ``--careful-upto`` also times the careful (pandas, per-row Python strings) reader, the one
  every file went through before the fast columnar reader, as "before".
- ``train``: SASRec (d=32, 1 layer, max_len 50, batch 256, sampled softmax with 1,024 shared negatives: full
  cross-entropy needs batch x positions x items logits) for a capped number of batches; seconds per epoch
  are EXTRAPOLATED from the measured batches to the epoch's batch count (labelled so).
- ``eval``: full-ranking leave-one-out test ranks (``Evaluator.ranks``: every item scored, history masked) on a
  seeded user sample, EXTRAPOLATED to every test user; the evaluator scores at most ``SCORE_BUDGET`` numbers per
  batch, never users x items.
- ``ann``: faiss HNSW (``padrec.serve.ann.DotProductIndex``) over the same model's item vectors: build time,
  recall@10 against exact top-10 on a user sample, per-query latency.
- ``serve``: in-process ``model.recommend([history], k=10)`` latency for one history (median), exact and HNSW.

Writes ``bench/results/scaling.json`` / ``scaling.md`` / ``scaling.png`` (log-log).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
RESULTS = ROOT / "bench" / "results"
DEFAULT_SIZES = "1e5:1e4,1e6:1e5,1e7:1e6,5e7:1e6"
SEED = 0
#: torch (and faiss) threads in the workers. 1 by default: on a 2-core machine shared with other jobs, 2 OpenMP
#: threads wait on each other (one history through SASRec: 1.4 ms with 1 thread, 93 ms with 2 under load 3)
THREADS = 1


def synth_log(
    n: int, n_items: int, seed: int = 0, zipf_a: float = 1.0, mean_len: float = 30.0, sigma: float = 1.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(user codes, item codes, timestamps, number of users) of exactly ``n`` interactions, rows in time order.

    Item popularity is Zipf-like (the item of popularity rank r is drawn with probability ∝ 1/r^a), history
    lengths are log-normal (most users short, a long tail of heavy users), rows are in global time order (as an
    event log is written) and the popularity rank is decoupled from the item id by a seeded permutation. All
    columnar: 5e7 rows take about a minute, no Python object per row."""
    rng = np.random.default_rng(seed)
    # log-normal lengths with the requested mean (mean of lognormal = exp(mu + sigma^2/2)), at least 1
    mu = np.log(mean_len) - sigma**2 / 2
    lengths = np.empty(0, dtype=np.int64)
    while lengths.sum() < n:
        more = np.maximum(1, rng.lognormal(mu, sigma, size=max(1024, int(1.2 * (n - lengths.sum()) / mean_len))))
        lengths = np.concatenate([lengths, more.astype(np.int64)])
    cut = int(np.searchsorted(np.cumsum(lengths), n))
    lengths = lengths[: cut + 1]
    lengths[-1] -= int(lengths.sum()) - n
    users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    # Zipf popularity over ranks, permuted onto item ids so that id order says nothing
    p = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** zipf_a
    cdf = np.cumsum(p / p.sum())
    ranks = np.minimum(np.searchsorted(cdf, rng.random(n)), n_items - 1)
    items = rng.permutation(n_items)[ranks]
    # each user starts at a random time in a 2-year window and acts every few hours (exponential gaps)
    start = rng.integers(1_600_000_000, 1_600_000_000 + 2 * 365 * 86400, size=len(lengths))
    gaps = rng.exponential(4 * 3600, size=n).astype(np.int64)
    first = np.zeros(n, dtype=bool)
    first[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    gaps[first] = 0
    seg = np.cumsum(gaps)
    seg_start = np.repeat(seg[first], lengths)
    ts = np.repeat(start, lengths) + (seg - seg_start)
    order = np.argsort(ts, kind="stable")  # a log is written in time order: users interleave
    return users[order], items[order], ts[order], len(lengths)


def write_log(path: Path, n: int, n_items: int, seed: int = 0) -> dict:
    """Write ``user,item,timestamp`` (CSV or Parquet by suffix) and return what was written."""
    import pyarrow as pa
    import pyarrow.compute as pc

    users, items, ts, n_users = synth_log(n, n_items, seed)

    def ids(prefix: str, codes: np.ndarray) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(pa.array(codes), pa.string()), "")

    table = pa.table({"user": ids("u", users), "item": ids("i", items), "timestamp": pa.array(ts)})
    del users, items, ts
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
    else:
        import pyarrow.csv as pcsv

        with open(tmp, "wb") as f:  # a plain header line, as most tools write it (pyarrow would quote it)
            f.write(b"user,item,timestamp\n")
            pcsv.write_csv(table, f, write_options=pcsv.WriteOptions(include_header=False, quoting_style="none"))
    tmp.replace(path)
    return {"interactions": n, "users": n_users, "items_requested": n_items, "seed": seed, "bytes": path.stat().st_size}


# -- measurement workers (each runs in its own child process) ------------------------------------------------


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def _log_path(n: int, n_items: int, seed: int) -> Path:
    return WORK / f"log-{n:.0e}-{n_items:.0e}-s{seed}.csv".replace("+", "")


def _cache_dir() -> Path:
    return WORK / "cache"


def worker_prep(n: int, n_items: int, seed: int, careful: bool) -> dict:
    """Cold ``load_dataset`` (parse + prepare + cache save), then the cached load, in this fresh process."""
    os.environ["PADREC_CACHE"] = str(_cache_dir() / ("careful" if careful else "fast"))
    from padrec.data.loaders import own
    from padrec.data.registry import load_dataset

    path = _log_path(n, n_items, seed)
    shutil.rmtree(os.environ["PADREC_CACHE"], ignore_errors=True)  # cold: no entry, no remembered source hash
    if careful:
        own._fast = lambda *a, **k: None  # the careful reader every file went through before the fast one
    base = _peak_gb()
    t0 = time.perf_counter()
    ds = load_dataset(path)
    prep = time.perf_counter() - t0
    peak = _peak_gb()
    t0 = time.perf_counter()
    again = load_dataset(path)
    cached = time.perf_counter() - t0
    assert again.meta["cache"]["hit"] and again.n_interactions == ds.n_interactions == n
    out = {
        "reader": "careful" if careful else "fast",
        "users": ds.n_users,
        "items": ds.n_items,
        "prep_seconds": round(prep, 2),
        "cached_load_seconds": round(cached, 2),
        "peak_rss_gb": round(peak, 3),
        "rss_after_imports_gb": round(base, 3),
        "csv_bytes": path.stat().st_size,
    }
    if careful:  # only the fast reader's entry is kept for the model stages
        shutil.rmtree(os.environ["PADREC_CACHE"], ignore_errors=True)
    return out


def worker_model(n: int, n_items: int, seed: int, batches: int, eval_users: int, ann: bool) -> list[dict]:
    """Train capped batches, time full-ranking evaluation on a user sample, HNSW recall, serving latency."""
    os.environ["PADREC_CACHE"] = str(_cache_dir() / "fast")
    import torch

    from padrec.data.registry import load_dataset
    from padrec.data.split import leave_one_out
    from padrec.eval.evaluator import SCORE_BUDGET, Evaluator
    from padrec.eval.protocol import Protocol
    from padrec.models import get_model_class
    from padrec.train.trainer import sequence_loader

    ds = load_dataset(_log_path(n, n_items, seed))
    split = leave_one_out(ds)
    out: list[dict] = []
    common = {"users": ds.n_users, "items": ds.n_items}
    bs = 256
    rec = get_model_class("sasrec")(
        params={"d": 32, "n_layers": 1, "n_heads": 1, "max_len": 50, "dropout": 0.1},
        # full cross-entropy would hold batch x positions x items logits (256 x 50 x 1e6 floats = 51 GB at 1e6
        # items): sampled softmax with shared negatives is the loss that scales
        train={"progress": False, "batch_size": bs, "max_epochs": 1, "limit_train_batches": batches,
               "loss": "sampled_softmax", "n_negatives": 1024, "val_users": 200, "accelerator": "cpu",
               "logger": ["csv"], "seed": seed},
    )  # fmt: skip
    run = WORK / "runs" / f"{n:.0e}".replace("+", "")
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    rec.fit(split, run_dir=run)
    fit_seconds = time.perf_counter() - t0
    times = json.loads((run / "epoch_times.json").read_text())
    per_epoch = len(sequence_loader(rec, split))
    measured = min(batches, per_epoch)
    train_s = float(times["train"][0])
    out.append({"stage": "train", **common, "model": "sasrec d=32 1 layer max_len=50, sampled softmax 1024",
                "batch_size": bs,
                "batches_measured": measured, "batches_per_epoch": per_epoch,
                "seconds_measured": round(train_s, 2),
                "seconds_per_epoch_extrapolated": round(train_s / measured * per_epoch, 1),
                "fit_seconds_incl_validation": round(fit_seconds, 1)})  # fmt: skip

    n_test = len(split.users("test"))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n_test, size=min(eval_users, n_test), replace=False))
    ev = Evaluator(split, Protocol())
    before = _peak_gb()
    t0 = time.perf_counter()
    ranks = ev.ranks(rec, "test", subset=sample)
    ev_s = time.perf_counter() - t0
    width = split.n_items + 1
    out.append({"stage": "eval", **common, "test_users": n_test, "users_measured": len(sample),
                "seconds_measured": round(ev_s, 2),
                "seconds_all_users_extrapolated": round(ev_s / len(sample) * n_test, 1),
                "ms_per_user": round(1000 * ev_s / len(sample), 3),
                "users_per_batch": max(1, min(Protocol().batch_size, SCORE_BUDGET // width)),
                "peak_rss_gb_before": round(before, 3), "peak_rss_gb_after": round(_peak_gb(), 3),
                "hr10_sample": round(float((ranks < 10).mean()), 4)})  # fmt: skip

    hist_sample = split.histories("test", split.users("test")[sample[:500]])
    ext = [rec.item_ids[h].tolist() for h in hist_sample]
    rec.recommend([ext[0]], k=10)  # builds the id index once, as a server does at start

    def median_ms(fn: Any, items: list, reps: int = 1) -> float:
        ts = []
        for x in items:
            t = time.perf_counter()
            for _ in range(reps):
                fn(x)
            ts.append((time.perf_counter() - t) / reps)
        return round(1000 * float(np.median(ts)), 3)

    serve = {"stage": "serve", **common, "queries": min(100, len(ext)),
             "exact_ms_median": median_ms(lambda h: rec.recommend([h], k=10), ext[:100])}  # fmt: skip
    if ann:
        from padrec.serve.ann import DotProductIndex

        t0 = time.perf_counter()
        index = DotProductIndex(rec, "hnsw", hnsw_m=16, ef_search=128, threads=torch.get_num_threads())
        build = time.perf_counter() - t0
        q = hist_sample[: min(500, len(hist_sample))]
        got = index.search(rec, q, 10)
        scores = rec.score(q).clone()
        scores[:, 0] = -torch.inf
        for row, h in enumerate(q):
            scores[row, torch.as_tensor(h, dtype=torch.long)] = -torch.inf
        exact = torch.topk(scores, 10, dim=1).indices.numpy()
        hits = [len({i for i, _ in g} & set(e.tolist())) for g, e in zip(got, exact, strict=True)]
        recall = float(np.mean(hits)) / 10
        out.append({"stage": "ann", **common, "index": "hnsw M=16 efSearch=128", "build_seconds": round(build, 1),
                    "recall10_vs_exact": round(recall, 4), "users_measured": len(q)})  # fmt: skip
        serve["hnsw_ms_median"] = median_ms(lambda h: index.recommend(rec, [h], k=10), ext[:100])
    out.append(serve)
    return out


# -- orchestration ---------------------------------------------------------------------------------------------


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine() -> dict:
    mem = 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    return {"cpus": os.cpu_count(), "memory_gb": round(mem / 1024**3, 1), "python": platform.python_version(),
            "platform": platform.platform()}  # fmt: skip


def _child(args: list[str], timeout: float) -> Any:
    """Run one worker in a fresh interpreter; its last stdout line is its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _size(text: str) -> int:
    return int(float(text))


def _key(r: dict) -> tuple:
    return (r["stage"], r.get("reader", ""), r["interactions"], r["items_requested"], r["seed"])


def load_records() -> list[dict]:
    path = RESULTS / "scaling.json"
    return json.loads(path.read_text())["records"] if path.is_file() else []


def save_records(new: list[dict]) -> None:
    from padrec.eval.report import write_bench

    merged = {_key(r): r for r in load_records()}
    merged.update({_key(r): r for r in new})
    records = sorted(merged.values(), key=lambda r: (r["interactions"], r["stage"], r.get("reader", "")))
    write_bench("scaling", records, markdown(records))
    plot(records, RESULTS / "scaling.png")


def run(sizes: list[tuple[int, int]], stages: list[str], seed: int, careful_upto: int, batches: int,
        eval_users: int, ann_from_items: int) -> None:  # fmt: skip
    from padrec.eval.report import git_commit

    for n, n_items in sizes:
        path = _log_path(n, n_items, seed)
        if not path.is_file():
            t0 = time.perf_counter()
            info = _child(["gen", str(n), str(n_items), str(seed)], timeout=3600)
            print(f"generated {path.name}: {info} in {time.perf_counter() - t0:.0f}s", flush=True)
        jobs: list[tuple[str, list[str]]] = []
        if "prep" in stages:
            jobs.append(("prep", ["prep", str(n), str(n_items), str(seed), "fast"]))
            if n <= careful_upto:
                jobs.append(("prep", ["prep", str(n), str(n_items), str(seed), "careful"]))
        if "model" in stages:
            ann = "1" if n_items >= ann_from_items else "0"
            jobs.append(("model", ["model", str(n), str(n_items), str(seed), str(batches), str(eval_users), ann]))
        for stage, args in jobs:
            load = _uptime()
            got = _child(args, timeout=3600)
            for r in got if isinstance(got, list) else [{"stage": stage, **got}]:
                r.update(interactions=n, items_requested=n_items, seed=seed, uptime_before=load,
                         machine=_machine(), commit=git_commit())  # fmt: skip
                print(json.dumps(r), flush=True)
                save_records([r])


def markdown(records: list[dict]) -> str:
    lines = ["# Scaling: preparation, training, evaluation and serving vs data size", "",
             "Synthetic logs (Zipf item popularity, log-normal history lengths, seed in each record), read as CSV "
             "through `load_dataset(path)`; each number from a fresh process on the machine named in "
             "`scaling.json` (with `uptime` load averages: the machine is shared, so times are upper bounds). "
             "`python bench/bench_scaling.py` reproduces it; the plot is `scaling.png`.", ""]  # fmt: skip
    prep = [r for r in records if r["stage"] == "prep"]
    if prep:
        lines += ["## Preparation (cold `load_dataset`: parse, prepare, write the cache) and cached load", "",
                  "| interactions | users | items | reader | prepare s | cached load s | peak RSS GB "
                  "| load avg before |",
                  "|---:|---:|---:|---|---:|---:|---:|---|"]  # fmt: skip
        for r in prep:
            lines.append(f"| {r['interactions']:.0e} | {r['users']:,} | {r['items']:,} | {r['reader']} | "
                         f"{r['prep_seconds']} | {r['cached_load_seconds']} | {r['peak_rss_gb']} | "
                         f"{_loadavg(r)} |")  # fmt: skip
        lines.append("")
        careful = {r["interactions"]: r for r in prep if r["reader"] == "careful"}
        fast = {r["interactions"]: r for r in prep if r["reader"] == "fast"}
        both = sorted(set(careful) & set(fast))
        if both:
            n = both[-1]
            c, f = careful[n], fast[n]
            mem = (c["peak_rss_gb"] - c["rss_after_imports_gb"]) / (f["peak_rss_gb"] - f["rss_after_imports_gb"])
            lines += [f"\"careful\" is the reader every file went through before the fast columnar one (pandas, a "
                      f"Python string per id per row); it is still the fallback for unusual files. At {n:.0e} it "
                      f"took {c['prep_seconds'] / f['prep_seconds']:.1f}x the time and "
                      f"{mem:.1f}x "
                      "the memory (above the interpreter's) of the fast reader. It is timed only up to "
                      f"`--careful-upto` (1e7): linearly extrapolated from {n:.0e} it would need about "
                      f"{(c['peak_rss_gb'] - c['rss_after_imports_gb']) * 5e7 / n:.0f} GB and "
                      f"{c['prep_seconds'] * 5e7 / n:.0f} s at 5e7 rows (targets: 12 GB, 300 s), too much to try "
                      "on this 24 GB machine shared with other jobs.", ""]  # fmt: skip
    tr = [r for r in records if r["stage"] == "train"]
    if tr:
        lines += ["## Training: SASRec seconds per epoch (EXTRAPOLATED from the measured batches)", "",
                  "| interactions | users | items | batches measured / per epoch | s measured "
                  "| s per epoch (extrap.) |",
                  "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in tr:
            lines.append(f"| {r['interactions']:.0e} | {r['users']:,} | {r['items']:,} | {r['batches_measured']} / "
                         f"{r['batches_per_epoch']} | {r['seconds_measured']} | "
                         f"{r['seconds_per_epoch_extrapolated']} |")  # fmt: skip
        lines.append("")
    ev = [r for r in records if r["stage"] == "eval"]
    if ev:
        lines += ["## Full-ranking evaluation (every item scored, history masked; EXTRAPOLATED to every test user)",
                  "", "| interactions | items | users/batch | users measured | ms per user | all test users s "
                  "(extrap.) | worker peak RSS GB (incl. training) |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in ev:
            lines.append(f"| {r['interactions']:.0e} | {r['items']:,} | {r['users_per_batch']} | "
                         f"{r['users_measured']} | {r['ms_per_user']} | {r['seconds_all_users_extrapolated']} "
                         f"| {r['peak_rss_gb_after']} |")  # fmt: skip
        lines.append("")
    sv = [r for r in records if r["stage"] in ("serve", "ann")]
    if sv:
        ann = {(r["interactions"]): r for r in sv if r["stage"] == "ann"}
        lines += ["## Serving one history in-process (`recommend(k=10)`, median) and faiss HNSW", "",
                  "| interactions | items | exact ms | HNSW ms | HNSW build s | HNSW recall@10 vs exact |",
                  "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in (r for r in sv if r["stage"] == "serve"):
            a = ann.get(r["interactions"], {})
            lines.append(f"| {r['interactions']:.0e} | {r['items']:,} | {r['exact_ms_median']} | "
                         f"{r.get('hnsw_ms_median', '-')} | {a.get('build_seconds', '-')} | "
                         f"{a.get('recall10_vs_exact', '-')} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def _loadavg(r: dict) -> str:
    up = r.get("uptime_before", "")
    return up.split("load average:")[-1].strip() if "load average" in up else up


def plot(records: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))

    def series(stage: str, x: str, y: str, **where: Any) -> tuple[list, list]:
        rows = [r for r in records if r["stage"] == stage and all(r.get(k) == v for k, v in where.items())
                and isinstance(r.get(y), int | float) and r[y] > 0]  # fmt: skip
        rows.sort(key=lambda r: r[x])
        return [r[x] for r in rows], [r[y] for r in rows]

    ax = axes[0]
    for reader, style in (("fast", "o-"), ("careful", "s--")):
        ax.plot(*series("prep", "interactions", "prep_seconds", reader=reader), style, label=f"prepare ({reader})")
    ax.plot(*series("prep", "interactions", "cached_load_seconds", reader="fast"), "^-", label="cached load")
    ax.plot(*series("train", "interactions", "seconds_per_epoch_extrapolated"), "d-", label="SASRec epoch (extrap.)")
    ax.plot(*series("eval", "interactions", "seconds_all_users_extrapolated"), "v-", label="full eval (extrap.)")
    ax.axhline(300, color="red", lw=0.8, ls="--", label="target at 5e7: 5 min")
    ax.set(xscale="log", yscale="log", xlabel="interactions", ylabel="seconds", title="time")
    ax = axes[1]
    for r in records:
        if r["stage"] == "prep":
            r["data_rss_gb"] = round(r["peak_rss_gb"] - r["rss_after_imports_gb"], 3)
    for reader, style, color in (("fast", "o-", "C0"), ("careful", "s--", "C1")):
        ax.plot(*series("prep", "interactions", "peak_rss_gb", reader=reader), style, color=color,
                label=f"peak RSS ({reader})")  # fmt: skip
        ax.plot(*series("prep", "interactions", "data_rss_gb", reader=reader), style, color=color, alpha=0.4,
                label=f"peak - RSS after imports ({reader})")  # fmt: skip
    xs = [1e5, 5e7]
    ax.plot(xs, [x * 1e-7 for x in xs], ":", color="grey", label="linear (1 GB per 1e7 rows)")
    ax.axhline(12, color="red", lw=0.8, ls="--", label="target at 5e7: 12 GB")
    ax.set(xscale="log", yscale="log", xlabel="interactions", ylabel="GB", title="memory of preparation")
    ax = axes[2]
    ax.plot(*series("serve", "items", "exact_ms_median"), "o-", label="exact recommend")
    ax.plot(*series("serve", "items", "hnsw_ms_median"), "s-", label="HNSW recommend")
    ax.plot(*series("eval", "items", "ms_per_user"), "v-", label="eval ms per user")
    ax.set(xscale="log", yscale="log", xlabel="items in the catalogue", ylabel="milliseconds", title="per query")
    for ax in axes:
        if not any(len(line.get_xdata()) for line in ax.get_lines()):
            ax.set(xscale="linear", yscale="linear")
            ax.text(0.5, 0.5, "not measured yet", ha="center", transform=ax.transAxes)
            continue
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="interactions:items pairs, comma-separated")
    ap.add_argument("--stages", default="prep,model", help="prep and/or model (train, eval, ann, serve)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--careful-upto", type=float, default=1e7, help="also time the careful reader up to this size")
    ap.add_argument("--batches", type=int, default=30, help="training batches measured per size")
    ap.add_argument("--eval-users", type=int, default=2000, help="users ranked per size (extrapolated to all)")
    ap.add_argument("--ann-from-items", type=float, default=1e5, help="build the HNSW index from this catalogue size")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("PADREC_BENCH_THREADS", THREADS)),
                    help="torch/faiss threads per worker")  # fmt: skip
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        import torch

        torch.set_num_threads(int(os.environ.get("PADREC_BENCH_THREADS", "1")))
        kind, *rest = a.worker
        n, n_items, seed = _size(rest[0]), _size(rest[1]), int(rest[2])
        if kind == "gen":
            result: Any = write_log(_log_path(n, n_items, seed), n, n_items, seed)
        elif kind == "prep":
            result = worker_prep(n, n_items, seed, careful=rest[3] == "careful")
        else:
            result = worker_model(n, n_items, seed, int(rest[3]), int(rest[4]), rest[5] == "1")
        threads = torch.get_num_threads()
        for r in result if isinstance(result, list) else [result]:
            r["threads"] = threads
        print(json.dumps(result))
        return
    if a.plot_only:
        save_records([])
        return
    os.environ["PADREC_BENCH_THREADS"] = str(a.threads)
    sizes = [(_size(p.split(":")[0]), _size(p.split(":")[1])) for p in a.sizes.split(",")]
    run(sizes, a.stages.split(","), a.seed, int(a.careful_upto), a.batches, a.eval_users, int(a.ann_from_items))


if __name__ == "__main__":
    main()
