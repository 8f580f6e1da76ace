"""Serving benchmark: throughput and p50/p99 latency of ``POST /recommend`` (top-10) over loopback.

    python bench/bench_serve.py [--datasets ml-1m amazon-beauty] [--requests 10000] [--max-seconds 90]

Per dataset: a SASRec run (``bench/.work/runs/<dataset>/sasrec`` when it holds a finished ``model.pt``,
else one trained for ``--epochs`` epochs into ``bench/.work/serve/<dataset>/sasrec``) is served by
``python -m padrec.serve`` in a subprocess on 127.0.0.1; a thread-pool load generator (httpx, one client
per thread) sends test-split histories with 1 and 32 concurrent clients, each run bounded by a request
count and a time limit. Latency is measured at the client (request sent -> body read). Client and server
share the machine's cores, so on a small CPU the numbers are a lower bound for a dedicated server.
Also: recall@10 of the faiss HNSW index (``--ann hnsw``) against exact scoring, in-process.
Results: ``bench/results/serve.json`` + ``serve.md`` (``padrec.eval.report.write_bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent


def data_dir() -> Path | None:
    if os.environ.get("PADREC_DATA"):
        return Path(os.environ["PADREC_DATA"])
    shared = REPO.parent / "shared" / "datasets"
    return shared if shared.is_dir() else None


def sasrec_run(name: str, split: Any, epochs: int) -> tuple[Path, str]:
    """A finished SASRec run for ``name``: the accuracy benchmark's if done, else a short one trained here."""
    done = ROOT / ".work" / "runs" / name / "sasrec"
    if (done / "model.pt").is_file() and (done / "config.json").is_file():
        return done, "bench_accuracy run"
    run = ROOT / ".work" / "serve" / name / "sasrec"
    if not (run / "model.pt").is_file():
        from padrec.models import get_model_class
        from padrec.train.config import resolve

        cls = get_model_class("sasrec")
        params, train = resolve("sasrec", cls.config_cls, name, {"max_epochs": epochs, "progress": False})
        t0 = time.perf_counter()
        cls(params=params.model_dump(), train=train.model_dump()).fit(split, run_dir=run)
        print(f"  trained sasrec on {name} for {epochs} epoch(s) in {time.perf_counter() - t0:.0f}s", flush=True)
    (run / "dataset.json").write_text(json.dumps({"dataset": name, "name": name}))
    return run, f"sasrec trained {epochs} epoch(s) for this benchmark"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m padrec.serve`` in a subprocess (its own interpreter: no GIL shared with the clients)."""

    def __init__(self, run: Path, threads: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "padrec.serve", "--run", str(run), "--port", str(self.port)]
        cmd += ["--log-level", "warning", "--threads", str(threads or 0)]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"})

    def wait(self, timeout: float = 120) -> dict:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).json()
            except httpx.TransportError:
                time.sleep(0.25)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load(url: str, bodies: list[dict], concurrency: int, requests: int, max_seconds: float) -> dict[str, Any]:
    """Send up to ``requests`` bodies (cycled) from ``concurrency`` threads, stopping at ``max_seconds``."""
    import httpx

    lock = threading.Lock()
    next_i = [0]
    lat: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.perf_counter() < deadline:
                with lock:
                    i = next_i[0]
                    if i >= requests:
                        break
                    next_i[0] += 1
                t0 = time.perf_counter()
                try:
                    r = c.post("/recommend", json=bodies[i % len(bodies)])
                    ok = r.status_code == 200 and len(r.json()["items"]) == bodies[i % len(bodies)]["k"]
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}", flush=True)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_second": len(lat) / wall,
        "errors": len(errors),
        "requests": len(lat),
        "seconds": wall,
    }


def ann_recall(run: Path, histories: list[list[str]], k: int = 10) -> dict[str, float]:
    """Recall@k of the HNSW index against exact top-k, and in-process time per single query of each."""
    from padrec.models import Recommender
    from padrec.serve.ann import DotProductIndex
    from padrec.serve.service import prepare_for_serving

    model = prepare_for_serving(Recommender.load(run))
    t0 = time.perf_counter()
    index = DotProductIndex(model, kind="hnsw")
    build = time.perf_counter() - t0
    hits = 0
    for i in range(0, len(histories), 256):
        chunk = histories[i : i + 256]
        exact = model.recommend(chunk, k=k)
        approx = index.recommend(model, chunk, k=k)
        hits += sum(
            len({x["item_id"] for x in a} & {x["item_id"] for x in e}) for a, e in zip(approx, exact, strict=True)
        )
    single = histories[:200]
    t0 = time.perf_counter()
    for h in single:
        model.recommend([h], k=k)
    exact_ms = (time.perf_counter() - t0) / len(single) * 1000
    t0 = time.perf_counter()
    for h in single:
        index.recommend(model, [h], k=k)
    ann_ms = (time.perf_counter() - t0) / len(single) * 1000
    return {
        f"recall@{k}": hits / (k * len(histories)),
        "exact_ms_per_query": exact_ms,
        "ann_ms_per_query": ann_ms,
        "index_build_s": build,
        "queries": len(histories),
    }


def markdown(records: list[dict]) -> str:
    lines = [
        "# Serving: POST /recommend top-10 over loopback (client-side latency)",
        "",
        "| dataset | model | items | clients | requests | errors | req/s | p50 ms | p99 ms | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["task"] != "latency":
            continue
        m = r["metrics"]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {m['items']} | {m['concurrency']} | {m['requests']} | {m['errors']} "
            f"| {m['requests_per_second']:.1f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {r['note']} |"
        )
    lines += [
        "",
        "## faiss HNSW vs exact top-10 (in-process, same model)",
        "",
        "| dataset | model | recall@10 | exact ms/query | hnsw ms/query | queries |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["task"] == "ann-recall":
            m = r["metrics"]
            lines.append(
                f"| {r['dataset']} | {r['model']} | {m['recall@10']:.4f} | {m['exact_ms_per_query']:.2f} "
                f"| {m['ann_ms_per_query']:.2f} | {m['queries']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["ml-1m", "amazon-beauty"])
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--requests", type=int, default=10_000, help="Requests per (dataset, concurrency).")
    ap.add_argument("--max-seconds", type=float, default=90.0, help="Time limit per (dataset, concurrency).")
    ap.add_argument("--epochs", type=int, default=1, help="Training epochs when no finished run exists.")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (and the recall check).")
    ap.add_argument("--recall-queries", type=int, default=2000)
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from padrec.data.registry import load_dataset
    from padrec.data.split import leave_one_out
    from padrec.eval.report import git_commit, write_bench

    common = {
        "protocol": "n/a",
        "device": "cpu",
        "seeds": [0],
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
    }
    setup = f"server (torch threads: {args.threads or 'default'}) and clients share {os.cpu_count()} cores"
    records: list[dict] = []
    for name in args.datasets:
        print(f"{name}:", flush=True)
        split = leave_one_out(load_dataset(name, data_dir()))
        run, origin = sasrec_run(name, split, args.epochs)
        rng = np.random.default_rng(0)
        users = rng.permutation(len(split.histories("test")))
        all_hist = split.histories("test")
        max_len = json.loads((run / "config.json").read_text())["params"]["max_len"]
        histories = [list(split.dataset.to_external(all_hist[u][-max_len:])) for u in users]
        bodies = [{"history": h, "k": 10, "exclude_seen": True} for h in histories]
        server = Server(run, args.threads)
        try:
            health = server.wait()
            load(server.url, bodies, 4, 200, 30)  # warm-up: first-call costs out of the measurement
            for conc in args.concurrency:
                m = load(server.url, bodies, conc, args.requests, args.max_seconds)
                print(f"  {conc:3d} clients: {m}", flush=True)
                capped = " (time limit hit)" if m["requests"] < args.requests else ""
                records.append(
                    {
                        "task": "latency",
                        "dataset": name,
                        "model": "sasrec",
                        **common,
                        "metrics": {**m, "concurrency": conc, "items": health["n_items"]},
                        "note": "; ".join(
                            x
                            for x in (
                                f"{conc} concurrent clients, {m['requests']} requests{capped}, top-10 exact",
                                f"{origin}; {setup}",
                                args.note,
                            )
                            if x
                        ),
                    }
                )
        finally:
            server.stop()
        rec = ann_recall(run, histories[: args.recall_queries])
        print(f"  hnsw: {rec}", flush=True)
        records.append(
            {
                "task": "ann-recall",
                "dataset": name,
                "model": "sasrec+faiss-hnsw",
                **common,
                "metrics": rec,
                "note": f"HNSW M=32 efSearch=128 vs exact top-10, {rec['queries']} test histories; {origin}",
            }
        )
    js, md = write_bench("serve", records, markdown(records))
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main(sys.argv[1:])
