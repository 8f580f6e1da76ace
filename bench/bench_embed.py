"""Speed of padrec's item-text embedding vs calling sentence-transformers directly.

    python bench/bench_embed.py [--data-dir DIR] [--repeats 2] [--batch-size 64] [--threads N] [--limit N]

Both sides embed the same texts (amazon-beauty titles through padrec's template, i.e. with the fallback
for the 7 empty titles) with the same loaded all-MiniLM-L6-v2 model and batch size:

- ``padrec``: ``embed_items(ds, encoder, cache=False)``: rendering, hashing, encoding, NaN check and the
  atomic cache write, everything a cache miss costs;
- ``direct``: ``SentenceTransformer.encode(texts, batch_size)``.

The two alternate (``padrec`` first on even repeats, ``direct`` first on odd ones) so drifting machine
load hits both; the record keeps the median items/s of each and their ratio (goal >= 0.95), and the
same ratio in items per CPU-second of this process (``ratio_cpu_time``), which other jobs on a shared
machine disturb far less than wall time. Also timed: a cache hit (``embed_items`` again with the cache
on). The embedding cache is a temporary folder.
Writes ``bench/results/embed.json`` + ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.95


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N items (quick checks; not recorded)")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch

    from padrec.data.dataset import from_sequences
    from padrec.data.registry import load_dataset
    from padrec.eval.report import git_commit, write_bench
    from padrec.text import embed_items, load_encoder, render_texts

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or os.environ.get("PADREC_DATA") or ROOT.parent / "shared" / "datasets"
    ds = load_dataset("amazon-beauty", data_dir)
    if args.limit:  # the first N items as a one-user dataset with the same item table rows
        table = ds.item_table.iloc[1 : args.limit + 1].set_index("item_id")
        ds = from_sequences(ds.name, ["u"], [list(table.index)], item_table=table)
    texts = render_texts(ds)
    enc = load_encoder("minilm", device="cpu")
    enc.encode(texts[:64], batch_size=args.batch_size)  # warm-up: first-call allocations
    runs: dict[str, list[float]] = {"padrec": [], "direct": []}
    cpu: dict[str, list[float]] = {"padrec": [], "direct": []}  # items per CPU-second: robust to other jobs
    vecs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:

        def padrec_run() -> float:
            t0 = time.perf_counter()
            emb = embed_items(ds, enc, cache=False, root=tmp, batch_size=args.batch_size, progress=False)
            dt = time.perf_counter() - t0
            vecs["padrec"] = emb.vectors[1:]
            return dt

        def direct_run() -> float:
            t0 = time.perf_counter()
            out = enc.model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
            dt = time.perf_counter() - t0
            vecs["direct"] = out
            return dt

        for r in range(args.repeats):
            order = [("padrec", padrec_run), ("direct", direct_run)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                c0 = time.process_time()
                runs[name].append(len(texts) / fn())
                cpu[name].append(len(texts) / (time.process_time() - c0))
                print(f"repeat {r} {name:7s} {runs[name][-1]:8.1f} items/s", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        hit = embed_items(ds, enc, root=tmp, batch_size=args.batch_size, progress=False)
        hit_seconds = time.perf_counter() - t0
        assert hit.from_cache
    diff = float(np.abs(vecs["padrec"] - vecs["direct"]).max())
    padrec_ips, direct_ips = statistics.median(runs["padrec"]), statistics.median(runs["direct"])
    ratio = padrec_ips / direct_ips
    cpu_ratio = statistics.median(cpu["padrec"]) / statistics.median(cpu["direct"])
    print(f"padrec {padrec_ips:.1f} items/s, direct {direct_ips:.1f} items/s, ratio {ratio:.3f} (goal >= {GOAL})")
    print(f"ratio of items per CPU-second {cpu_ratio:.3f}")
    print(f"cache hit {hit_seconds:.3f} s; max |padrec - direct| = {diff:.2e}")
    if args.limit:
        print("--limit given: nothing recorded")
        return 0
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = (
        f"{len(texts):,} titles, batch {args.batch_size}, median of {args.repeats} alternating repeats; "
        f"padrec = embed_items(cache=False) incl. rendering, hashing and the atomic cache write; "
        f"torch threads {threads}; load average {load:.1f} at the end (machine shared with training jobs); "
        f"vectors identical to direct encode (max abs diff {diff:.1e})" + (f"; {args.note}" if args.note else "")
    )
    record = {
        "task": "speed",
        "dataset": "amazon-beauty",
        "model": "minilm",
        "protocol": "n/a",
        "metrics": {
            "items_per_second": round(padrec_ips, 2),
            "ratio_vs_sentence_transformers": round(ratio, 4),
            "sentence_transformers_items_per_second": round(direct_ips, 2),
            "ratio_cpu_time": round(cpu_ratio, 4),
            "cache_hit_seconds": round(hit_seconds, 4),
        },
        "device": "cpu",
        "seeds": [],
        "commit": git_commit(),
        "date": datetime.now(UTC).date().isoformat(),
        "note": note,
    }
    per_repeat = "\n".join(
        f"| {r} | {runs['padrec'][r]:.1f} | {runs['direct'][r]:.1f} | {'padrec' if r % 2 == 0 else 'direct'} |"
        for r in range(args.repeats)
    )
    from padrec.eval.report import records_markdown

    markdown = (
        records_markdown([record], "Item text embedding speed: padrec vs sentence-transformers (all-MiniLM-L6-v2)")
        + f"\nGoal: ratio >= {GOAL}. Per repeat (items/s):\n\n| repeat | padrec | direct | first |\n|---|---|---|---|\n"
        + per_repeat
        + "\n"
    )
    js, md = write_bench("embed", [record], markdown)
    print(f"wrote {js} and {md}")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
