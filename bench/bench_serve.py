"""Serving benchmark: throughput and p50/p99 latency of ``POST /recommend`` (top-10) over loopback.

    python bench/bench_serve.py [--datasets ml-1m amazon-beauty] [--requests 10000] [--max-seconds 90]
        [--modes unbatched batched batched:workers=2] [--batch-wait-ms 2] [--max-batch 64] [--no-recall]

Per dataset: a SASRec run (``bench/.work/runs/<dataset>/sasrec`` when it holds a finished ``model.pt``,
else one trained for ``--epochs`` epochs into ``bench/.work/serve/<dataset>/sasrec``) is served by
``python -m padrec.serve`` in a subprocess on 127.0.0.1, one server per mode, all up at once in the same
invocation: ``unbatched`` (``--max-batch 1``: each request scored alone in the server's thread pool,
the only mode before batching) and ``batched`` (``--batch-wait-ms``/``--max-batch``); a mode may set
``wait=MS``, ``max=N`` and ``workers=N`` (``batched:workers=2,wait=1``). The load generator sends
test-split histories with 1 and 32 concurrent clients (keep-alive connections): ``--client wrk`` (the default
where ``wrk`` is installed: C, one thread, about 10 µs of CPU per request, so the cores stay with the server;
each run lasts ``--max-seconds``) or ``--client httpx`` (one Python thread per client, about 1.3 ms of CPU per
request; each run bounded by a request count and a time limit). Runs are split into ``--rounds`` rounds that
alternate between the modes (so a change in the machine's background load hits every mode alike; the first
mode of a round rotates); a mode's rounds are pooled. Latency is measured at the client (request sent -> body read).
Client and server share the machine's cores, so on a small CPU the numbers are a lower bound for a
dedicated server; each record notes the 1-minute load average at its rounds' starts. Also (unless
``--no-recall``): recall@10 of the faiss HNSW index (``--ann hnsw``) against exact scoring, in-process.
Results are merged into ``bench/results/serve.json`` + ``serve.md``: a new record replaces the stored one
of the same dataset, mode, batch settings, workers and clients; records of other datasets are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def parse_mode(spec: str, wait_ms: float, max_batch: int) -> dict[str, Any]:
    """``unbatched`` or ``batched[:wait=MS,max=N,workers=N]`` -> server settings and a label."""
    name, _, opts = spec.partition(":")
    if name not in ("unbatched", "batched"):
        raise SystemExit(f"--modes: unknown mode {spec!r}; expected unbatched or batched[:wait=MS,max=N,workers=N]")
    mode = {"mode": name, "max_batch": 1, "batch_wait_ms": 0.0, "workers": 1}
    if name == "batched":
        mode.update(max_batch=max_batch, batch_wait_ms=wait_ms)
    for opt in filter(None, opts.split(",")):
        key, _, value = opt.partition("=")
        field = {"wait": "batch_wait_ms", "max": "max_batch", "workers": "workers"}.get(key)
        if field is None or not value:
            raise SystemExit(f"--modes {spec!r}: unknown option {opt!r} (wait=MS, max=N, workers=N)")
        mode[field] = float(value) if field == "batch_wait_ms" else int(value)
    return mode


def mode_label(m: dict[str, Any]) -> str:
    if m.get("max_batch", 1) <= 1:
        return "unbatched"
    return f"batched ≤{m['max_batch']}, wait {m['batch_wait_ms']:g} ms"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


class Server:
    """``python -m padrec.serve`` in a subprocess (its own interpreter: no GIL shared with the clients)."""

    def __init__(self, run: Path, threads: int | None, mode: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "padrec.serve", "--run", str(run), "--port", str(self.port)]
        cmd += ["--log-level", "warning", "--threads", str(threads or 0)]
        cmd += ["--max-batch", str(mode["max_batch"]), "--batch-wait-ms", str(mode["batch_wait_ms"])]
        cmd += ["--workers", str(mode["workers"])]
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


def load(
    url: str, bodies: list[dict], concurrency: int, requests: int, max_seconds: float, start: int = 0
) -> dict[str, Any]:
    """Send up to ``requests`` bodies (cycled, from ``start``) from ``concurrency`` threads, for ``max_seconds``.

    Returns the summary plus the raw latencies (``lat_ms``), so rounds can be pooled.
    """
    import httpx

    lock = threading.Lock()
    next_i = [start]
    requests += start
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
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}", flush=True)
    return {**summary([x * 1000 for x in lat], len(errors), wall), "lat_ms": [x * 1000 for x in lat]}


WRK_SCRIPT = """
local bodies, n, i = {}, 0, 0
bad, first_bad = 0, ""
function init(args)
  for line in io.lines(BODIES) do n = n + 1; bodies[n] = line end
  i = OFFSET % n
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  i = i % n + 1
  return wrk.format(nil, "/recommend", nil, bodies[i])
end
function response(status, headers, body)
  local _, items = string.gsub(body, '"item_id"', "")
  if status ~= 200 or items ~= K then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body, 1, 200) end
  end
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local b, fb = 0, ""
  for _, t in ipairs(threads) do b = b + t:get("bad"); if fb == "" then fb = t:get("first_bad") end end
  local e, parts = summary.errors, {}
  for j = 1, #latency do
    local v, c = latency(j)
    parts[#parts + 1] = string.format("[%d,%d]", v, c)
  end
  io.write(string.format('WRK {"requests":%d,"duration_us":%d,"bad":%d,"socket":%d,"status":%d,'
    .. '"timeout":%d,"first_bad":%q,"hist":[%s]}\\n', summary.requests, summary.duration, b,
    e.connect + e.read + e.write, e.status, e.timeout, fb, table.concat(parts, ",")))
end
"""


def load_wrk(url: str, bodies_file: Path, concurrency: int, seconds: float, offset: int = 0, k: int = 10) -> dict:
    """``concurrency`` keep-alive connections from one wrk thread for ``seconds`` (wrk is C: about 10 µs of CPU
    per request, so nearly all of the machine is left to the server; the httpx client costs about 1.3 ms).

    Every answer is checked (status 200 and ``k`` items); latencies come back as wrk's histogram (µs), expanded
    into ``lat_ms`` so that rounds can be pooled like the httpx client's.
    """
    script = bodies_file.with_suffix(".lua")
    head = f'BODIES = "{bodies_file}"\nK = {k}\nOFFSET = {offset}\n'
    script.write_text(head + WRK_SCRIPT)
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    raw = json.loads(line[4:])
    hist = np.asarray(raw["hist"], dtype=np.int64).reshape(-1, 2)
    lat_ms = np.repeat(hist[:, 0], hist[:, 1]) / 1000.0
    errors = raw["bad"] + raw["socket"] + raw["timeout"]
    if errors:
        print(f"  {errors} errors, first: {raw['first_bad'] or 'socket error or timeout'}", flush=True)
    wall = raw["duration_us"] / 1e6
    return {**summary(list(lat_ms), errors, wall), "requests": raw["requests"], "lat_ms": list(lat_ms)}


def summary(lat_ms: list[float], errors: int, wall: float) -> dict[str, Any]:
    ms = np.asarray(lat_ms)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_second": len(ms) / wall,
        "errors": errors,
        "requests": len(ms),
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


def record_key(r: dict) -> tuple:
    """Records before batching existed carry no mode: they were unbatched, one worker."""
    m = r["metrics"]
    if r["task"] != "latency":
        return (r["task"], r["dataset"])
    return (
        r["task"],
        r["dataset"],
        m.get("max_batch", 1),
        m.get("batch_wait_ms", 0.0),
        m.get("workers", 1),
        m["concurrency"],
    )


def markdown(records: list[dict]) -> str:
    lines = [
        "# Serving: POST /recommend top-10 over loopback (client-side latency)",
        "",
        "Modes: `unbatched` scores each request alone in the server's thread pool (`--max-batch 1`, the only mode",
        "before batching); `batched` queues concurrent requests and scores up to `--max-batch` histories in one pass",
        "on a worker thread (sequential models: grouped by length, without the padding to `max_len`), waiting at",
        "most `--batch-wait-ms` for company under load. Rows of one dataset and commit were measured side by side",
        "in one run of `bench/bench_serve.py`, in rounds alternating between the modes; the note gives the load.",
        "",
        "| dataset | model | items | mode | workers | clients | requests | errors | req/s | p50 ms | p99 ms "
        "| mean batch | commit | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["task"] != "latency":
            continue
        m = r["metrics"]
        batch = f"{m['mean_batch']:.1f}" if m.get("mean_batch") else "–"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {m['items']} | {mode_label(m)} | {m.get('workers', 1)} "
            f"| {m['concurrency']} | {m['requests']} | {m['errors']} | {m['requests_per_second']:.1f} "
            f"| {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {batch} | {r['commit']} | {r['note']} |"
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


def batch_counts(url: str) -> tuple[int, float] | None:
    """(model calls, histories) so far from the server's /metrics (one worker's view when there are several)."""
    import httpx

    try:
        stats = httpx.get(f"{url}/metrics", timeout=10).json().get("batching")
    except (httpx.HTTPError, ValueError):
        return None
    return (stats["batches"], stats["mean_histories_per_batch"] * stats["batches"]) if stats else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["ml-1m", "amazon-beauty"])
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--modes", nargs="+", default=["unbatched", "batched"], help="See the module docstring.")
    ap.add_argument("--batch-wait-ms", type=float, default=2.0, help="Batch window of the batched modes.")
    ap.add_argument("--max-batch", type=int, default=64, help="Most histories per model call in batched modes.")
    ap.add_argument("--requests", type=int, default=10_000, help="Requests per (dataset, mode, concurrency).")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=90.0,
        help="Time limit per (dataset, mode, concurrency); wrk runs all of it.",
    )
    ap.add_argument("--rounds", type=int, default=5, help="Rounds per concurrency, each mode in turn.")
    ap.add_argument("--epochs", type=int, default=1, help="Training epochs when no finished run exists.")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (and the recall check).")
    ap.add_argument("--recall-queries", type=int, default=2000)
    ap.add_argument("--no-recall", action="store_true", help="Skip the HNSW recall check (its stored rows stay).")
    ap.add_argument(
        "--client",
        choices=["wrk", "httpx"],
        default="wrk" if shutil.which("wrk") else "httpx",
        help="Load generator: wrk (C, `apt-get install wrk`; the default where installed) or httpx threads.",
    )
    ap.add_argument("--note", default="")
    ap.add_argument("--results-dir", type=Path, default=None, help="Default: bench/results (pilot runs elsewhere).")
    args = ap.parse_args(argv)
    modes = [parse_mode(s, args.batch_wait_ms, args.max_batch) for s in args.modes]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from padrec.data.registry import load_dataset
    from padrec.data.split import leave_one_out
    from padrec.eval.report import git_commit, merge_bench

    common = {
        "protocol": "n/a",
        "device": "cpu",
        "seeds": [0],
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
    }
    client = (
        "clients: wrk, 1 thread, keep-alive connections"
        if args.client == "wrk"
        else "clients: httpx, one Python thread each"
    )
    setup = f"server (torch threads: {args.threads or 'default'}) and clients share {os.cpu_count()} cores; {client}"
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
        bodies_file = ROOT / ".work" / "serve" / name / "bodies.jsonl"
        bodies_file.parent.mkdir(parents=True, exist_ok=True)
        bodies_file.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))

        def send(
            url: str, conc: int, n: int, seconds: float, start: int, bodies=bodies, bodies_file=bodies_file
        ) -> dict[str, Any]:
            if args.client == "wrk":  # bounded by time only: the request count is what fits in it
                return load_wrk(url, bodies_file, conc, seconds, offset=start)
            return load(url, bodies, conc, n, seconds, start=start)

        servers = []
        try:  # every mode's server up at once; rounds alternate between them, so they share the background load
            for mode in modes:
                servers.append(Server(run, args.threads, mode))
            healths = [s.wait() for s in servers]
            for s in servers:
                send(s.url, 4, 200, 2, 0)  # warm-up: first-call costs out of the measurement
            for conc in args.concurrency:
                chunk = -(-args.requests // args.rounds)
                acc = [{"lat": [], "errors": 0, "wall": 0.0, "loads": [], "calls": 0, "histories": 0.0} for _ in modes]
                for r in range(args.rounds):
                    for j in range(len(modes)):
                        i = (j + r) % len(modes)  # rotate which mode goes first
                        a, url = acc[i], servers[i].url
                        a["loads"].append(float(load_average().split()[0]))
                        before = batch_counts(url) if modes[i]["workers"] == 1 else None
                        m = send(url, conc, chunk, args.max_seconds / args.rounds, r * chunk)
                        after = batch_counts(url) if before else None
                        if before and after:
                            a["calls"] += after[0] - before[0]
                            a["histories"] += after[1] - before[1]
                        a["lat"] += m["lat_ms"]
                        a["errors"] += m["errors"]
                        a["wall"] += m["seconds"]
                for mode, a, health in zip(modes, acc, healths, strict=True):
                    m = summary(a["lat"], a["errors"], a["wall"])
                    if a["calls"]:  # histories per model call (one worker: /metrics is per worker)
                        m["mean_batch"] = a["histories"] / a["calls"]
                    loads = f"{min(a['loads']):.2f}-{max(a['loads']):.2f}"
                    print(f"  {mode_label(mode)}, {mode['workers']} worker(s), {conc:3d} clients: {m}", flush=True)
                    capped = " (time limit hit)" if m["requests"] < args.requests and args.client == "httpx" else ""
                    if args.client == "wrk":
                        capped = f" in {m['seconds']:.0f} s"
                    records.append(
                        {
                            "task": "latency",
                            "dataset": name,
                            "model": "sasrec",
                            **common,
                            "metrics": {**m, **mode, "concurrency": conc, "items": health["n_items"]},
                            "note": "; ".join(
                                x
                                for x in (
                                    f"{conc} concurrent clients, {m['requests']} requests{capped} in {args.rounds} "
                                    f"rounds alternating with the other modes, top-10 exact",
                                    f"{origin}; {setup}; 1-min load average at the rounds' starts: {loads}",
                                    args.note,
                                )
                                if x
                            ),
                        }
                    )
        finally:
            for s in servers:
                s.stop()
        if args.no_recall:
            continue
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
    merge_bench("serve", records, record_key, markdown, results_dir=args.results_dir)
    print(f"merged into serve.json and serve.md in {args.results_dir or 'bench/results'}")


if __name__ == "__main__":
    main(sys.argv[1:])
