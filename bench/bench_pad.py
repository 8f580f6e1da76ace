"""PAD vs its backbone: accuracy per popularity bin over seeds, and serving cost, in one script.

    python bench/bench_pad.py --dataset amazon-beauty --backbone sasrec --seeds 0 1 2 [key=value ...]

For each seed a PAD run directory ``bench/.work/pad/<dataset>/<backbone>-seed<k>`` is created (finished
stages are reused, so an interrupted benchmark continues). The backbone of seed 0 can be an existing
run (``--pretrained DIR``) to avoid training it twice. Seeds can run as separate processes: ``--add-seeds``
adds a run's seeds to the stored records made with the same settings. Records (MISSION.md §5): models ``<backbone>``,
``pad-<backbone>`` (+ ``-<variant>`` for ablations), protocol ``full-loo``, metrics HR@10/NDCG@10 as
mean over seeds (``_std`` alongside), groups ``bin1``..``bin10``, ``cold``, ``warm``. Serving cost: time
to score all items for a batch of users, PAD vs backbone, same run, alternating order, median of 9.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from padrec.data.registry import load_dataset
from padrec.data.split import COUNT_GROUPS, leave_one_out
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.eval.report import git_commit, merge_bench
from padrec.models import Recommender
from padrec.pad.pipeline import comparison_table, run_pad
from padrec.train.config import parse_overrides

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "pad"
GROUPS = [*(f"bin{i}" for i in range(1, 11)), "unseen", "cold", "warm", *COUNT_GROUPS]


def _hr_ndcg(d: dict) -> dict:
    return {m: d[m] for m in ("HR@10", "NDCG@10") if m in d}


def _seed_values(result, seed: int) -> dict:
    """One seed's HR/NDCG@10, overall and per group: what a record keeps so later seeds can be added."""
    groups = {g: _hr_ndcg(result.groups[g]) for g in GROUPS if g in result.groups}
    return {"seed": seed, **_hr_ndcg(result.overall), "groups": {g: v for g, v in groups.items() if v}}


def _aggregate(per_seed: list[dict]) -> tuple[dict, dict]:
    """Mean and std over seeds of the overall metrics and of each group's."""

    def agg(dicts: list[dict]) -> dict:
        out = {}
        for m in ("HR@10", "NDCG@10"):
            vals = [d[m] for d in dicts if m in d]
            if vals:
                out[m] = float(np.mean(vals))
                out[f"{m}_std"] = float(np.std(vals))
        return out

    # a group every seed reports (a seed stored before a group existed must not turn a mean into one seed's)
    groups = {g: agg([s["groups"][g] for s in per_seed]) for g in GROUPS if all(g in s["groups"] for s in per_seed)}
    return agg(per_seed), {g: v for g, v in groups.items() if v}


def _mean_record(name: str, per_seed: list[dict], dataset: str, protocol: str, note: str, config: dict) -> dict:
    metrics, groups = _aggregate(per_seed)
    return {
        "task": "accuracy",
        "dataset": dataset,
        "model": name,
        "protocol": protocol,
        "metrics": metrics,
        "groups": groups,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "seeds": [s["seed"] for s in per_seed],
        "per_seed": per_seed,
        "config": config,
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "note": note,
    }


def _stored_seeds(rec: dict) -> list[dict]:
    """A stored record's per-seed values; a one-seed record from before ``per_seed`` existed is its own."""
    if "per_seed" in rec:
        return rec["per_seed"]
    if len(rec["seeds"]) != 1:
        raise SystemExit(
            f"{rec['dataset']} {rec['model']}: the stored record over seeds {rec['seeds']} has no "
            "per-seed values to add to; rerun every seed in one call"
        )
    groups = {g: _hr_ndcg(v) for g, v in rec["groups"].items()}
    return [{"seed": rec["seeds"][0], **_hr_ndcg(rec["metrics"]), "groups": groups}]


def _add_seeds(stored: dict, new: dict) -> dict:
    """``stored`` with ``new``'s seeds added: same dataset, model and settings, no seed twice."""
    same = stored.get("config") == new["config"] or f"overrides {new['config']['overrides']}" in stored["note"]
    if not same:
        raise SystemExit(
            f"{new['dataset']} {new['model']}: the stored record was made with other settings "
            f"({stored.get('config') or stored['note']}); these seeds cannot be added to it"
        )
    both = set(stored["seeds"]) & set(new["seeds"])
    if both:
        raise SystemExit(f"{new['dataset']} {new['model']}: seeds {sorted(both)} are already in the stored record")
    per_seed = sorted(_stored_seeds(stored) + new["per_seed"], key=lambda s: s["seed"])
    metrics, groups = _aggregate(per_seed)
    out = dict(stored)
    out["metrics"] = {**stored["metrics"], **metrics}  # keeps seed-0 extras (experts, concordance)
    out["groups"] = groups
    out.update(seeds=[s["seed"] for s in per_seed], per_seed=per_seed, config=new["config"], date=new["date"])
    out["commit"] = f"{stored['commit']}+{new['commit']}"
    out["note"] = f"{stored['note']}; seeds {new['seeds']} added by a later run (commit {new['commit']})"
    return out


def serving_cost(backbone, pad, split, batch: int = 256, repeats: int = 9) -> dict:
    hist = split.histories("test")[:batch]
    times = {"backbone": [], "pad": []}
    for _ in range(repeats):
        for name, model in (("backbone", backbone), ("pad", pad)):
            t = time.perf_counter()
            model.score(hist)
            times[name].append(time.perf_counter() - t)
    b, p = statistics.median(times["backbone"]), statistics.median(times["pad"])
    return {"backbone_ms": 1000 * b, "pad_ms": 1000 * p, "ratio": p / b, "batch": batch}


def expert_breakdown(pad, split) -> dict[str, float]:
    """Test NDCG@10 of each expert alone (overall and cold), and the learned gate weights (bin1, bin10)."""
    ev = Evaluator(split, Protocol())
    out: dict[str, float] = {}
    w = pad.net.gate_weights().detach()
    for k, name in enumerate(pad.net.names):
        with pad.net.only(name):
            res = ev.run(pad, stage="test")
        out[f"expert_{name}_NDCG@10"] = res.overall["NDCG@10"]
        out[f"expert_{name}_cold_NDCG@10"] = res.groups["cold"]["NDCG@10"]
        out[f"gate_{name}_bin1"], out[f"gate_{name}_bin10"] = float(w[k, 0]), float(w[k, -1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--backbone", default="sasrec")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variant", default="", help="ablation label, e.g. 'nolam' -> model pad-sasrec-nolam")
    ap.add_argument("--pretrained", type=Path, help="an existing backbone run dir to reuse for every seed")
    ap.add_argument("--encoder", default="minilm", help="text encoder: minilm, mpnet or a model folder")
    ap.add_argument("--note", default="")
    ap.add_argument("--replace", action="store_true", help="overwrite a stored record over more seeds")
    ap.add_argument(
        "--add-seeds",
        action="store_true",
        help="add these seeds to the stored records of the same settings (seeds run as separate processes)",
    )
    ap.add_argument("--serving-only", action="store_true", help="re-time serving of the first seed's finished run")
    ap.add_argument("--plot-only", action="store_true", help="redraw results/pad_<dataset>.png from pad.json only")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    if args.plot_only:
        records = json.loads((ROOT / "results" / "pad.json").read_text())["records"]
        print(_plot(records, args.dataset))
        return
    split = leave_one_out(load_dataset(args.dataset))
    if args.serving_only:
        run_dir = WORK / args.dataset / f"{args.backbone}-seed{args.seeds[0]}"
        cost = serving_cost(Recommender.load(run_dir / "pretrain"), Recommender.load(run_dir / "pad"), split)
        print(cost)
        _update_speed(args.dataset, f"pad-{args.backbone}", args.seeds, cost)
        _update_concordance(args.dataset, f"pad-{args.backbone}", run_dir)
        return
    overrides = parse_overrides(args.overrides)
    base_res, pad_res, runs = [], [], []
    for seed in args.seeds:
        run_dir = WORK / args.dataset / f"{args.backbone}{'-' + args.variant if args.variant else ''}-seed{seed}"
        if args.pretrained and not (run_dir / "pretrain").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(args.pretrained, run_dir / "pretrain", ignore=shutil.ignore_patterns("checkpoints"))
        seeded = {"backbone.seed": seed, "seed": seed, "progress": False, "backbone.progress": False, **overrides}
        out = run_pad(split, run_dir, backbone=args.backbone, encoder=args.encoder, overrides=seeded)
        print(comparison_table(out.results), flush=True)
        base_res.append(_seed_values(out.results[args.backbone], seed))
        pad_res.append(_seed_values(out.results[f"pad-{args.backbone}"], seed))
        runs.append(out)
    cost = serving_cost(runs[0].backbone, runs[0].pad, split)
    epochs = {
        k: json.loads((runs[0].run_dir / k / "train.json").read_text()).get("epochs")
        for k in ("align", "text-expert", "pad")
        if (runs[0].run_dir / k / "train.json").exists()  # no align stage without the aligned expert
    }
    note = (
        f"{args.note}; encoder {args.encoder}; full ranking, history masked; early stopping on valid NDCG@10; "
        f"stage epochs (seed {args.seeds[0]}): {epochs}; overrides {overrides}; serving {cost}"
    ).strip("; ")
    pad_name = f"pad-{args.backbone}" + (f"-{args.variant}" if args.variant else "")
    config = {"backbone": args.backbone, "encoder": args.encoder, "overrides": overrides}
    protocol = runs[0].results[args.backbone].protocol
    new = [_mean_record(pad_name, pad_res, args.dataset, protocol, note, config)]
    new[0]["metrics"].update(_concordance(runs[0].run_dir))
    new[0]["metrics"].update(expert_breakdown(runs[0].pad, split))
    if "text-only" in runs[0].results:  # text_init=pretrain: the text tower alone, before stage 3
        tower = runs[0].results["text-only"]
        new[0]["metrics"]["text_tower_NDCG@10"] = tower.overall["NDCG@10"]
        new[0]["metrics"]["text_tower_cold_NDCG@10"] = tower.groups["cold"]["NDCG@10"]
    if not args.variant:
        new.insert(0, _mean_record(args.backbone, base_res, args.dataset, protocol, note, config))
        new.append(_speed_record(args.dataset, pad_name, args.seeds, cost))
    _merge(new, replace=args.replace, add_seeds=args.add_seeds)


def _speed_record(dataset: str, model: str, seeds: list[int], cost: dict) -> dict:
    return {
        "task": "speed",
        "dataset": dataset,
        "model": model,
        "protocol": "n/a",
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "seeds": seeds,
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "metrics": {
            "score_ms_backbone": cost["backbone_ms"],
            "score_ms_pad": cost["pad_ms"],
            "serving_cost_ratio": cost["ratio"],
        },
        "note": f"time to score all items for {cost['batch']} users, median of 9, same process, alternating order",
    }


def _concordance(run_dir: Path) -> dict[str, float]:
    """Id-space vs text-space neighbourhood agreement, before vs after alignment (empty if not computed)."""
    path = run_dir / "concordance.json"
    if not path.exists():
        return {}
    c = json.loads(path.read_text())
    return {f"concordance_{w}_{k}": c[w][k] for w in ("before", "after") for k in ("overlap_at_k", "spearman")}


def _key(r: dict) -> tuple:
    return r["task"], r["dataset"], r["model"]


def _update_concordance(dataset: str, model: str, run_dir: Path) -> None:
    values = _concordance(run_dir)

    def update(records: list[dict]) -> None:
        for r in records:
            if _key(r) == ("accuracy", dataset, model):
                r["metrics"].update(values)

    merge_bench("pad", [], _key, _markdown, update=update)


def _update_speed(dataset: str, model: str, seeds: list[int], cost: dict) -> None:
    _merge([_speed_record(dataset, model, seeds, cost)])


def _merge(new: list[dict], replace: bool = False, add_seeds: bool = False) -> None:
    """Add ``new`` to pad.json; an accuracy record over more seeds is kept unless ``replace``; with
    ``add_seeds`` an accuracy record's seeds are added to the stored one's (under the lock)."""

    def keep_old(old: dict, rec: dict) -> bool:
        keep = not replace and rec["task"] == "accuracy" and len(old["seeds"]) > len(rec["seeds"])
        if keep:
            print(
                f"kept the stored {rec['dataset']} {rec['model']} record over seeds {old['seeds']} "
                f"(this run: {rec['seeds']}; --replace to overwrite it, --add-seeds to add to it)",
                flush=True,
            )
        return keep

    def add(records: list[dict]) -> None:
        for rec in (r for r in new if r["task"] == "accuracy"):
            hits = [k for k, r in enumerate(records) if _key(r) == _key(rec)]
            if hits:
                records[hits[0]] = _add_seeds(records[hits[0]], rec)
            else:
                records.append(rec)

    if add_seeds:
        rest = [r for r in new if r["task"] != "accuracy"]
        records = merge_bench("pad", rest, _key, _markdown, update=add)
    else:
        records = merge_bench("pad", new, _key, _markdown, keep_old)
    for dataset in sorted({r["dataset"] for r in new}):
        _plot(records, dataset)


def _plot(records: list[dict], dataset: str, max_series: int = 6) -> Path:
    """``results/pad_<dataset>.png``: NDCG@10 per popularity bin ± std over seeds, and each PAD row's change
    against its own backbone (percent). Drawn: every backbone and its plain ``pad-<backbone>``, then the variants
    with the largest overall gain over their backbone, up to ``max_series``; pad.md lists every record."""
    from padrec.eval.plots import plot_groups

    rows = [r for r in records if r["task"] == "accuracy" and r["dataset"] == dataset]
    if not rows:
        raise SystemExit(f"no accuracy records for {dataset!r} in pad.json")

    def backbone(r: dict) -> str:
        return r["model"].removeprefix("pad-").split("-")[0]

    # each backbone, then its PAD rows: sasrec, pad-sasrec, pad-sasrec-aux, gru4rec, pad-gru4rec
    def order(r: dict) -> tuple:
        base = backbone(r)
        return (base != "sasrec", base, r["model"] != base, r["model"])

    rows.sort(key=order)
    groups = ["overall", "cold", "warm", *(f"bin{i}" for i in range(1, 11))]

    def pick(r: dict, key: str) -> dict[str, float]:
        src = {"overall": r["metrics"], **r.get("groups", {})}
        return {g: src[g][key] for g in groups if key in src.get(g, {})}

    label = {id(r): f"{r['model']} ({len(r['seeds'])} seed{'s' if len(r['seeds']) > 1 else ''})" for r in rows}
    by_model = {r["model"]: label[id(r)] for r in rows}
    series = {label[id(r)]: pick(r, "NDCG@10") for r in rows}
    errors = {label[id(r)]: pick(r, "NDCG@10_std") for r in rows}
    baseline = {label[id(r)]: by_model[backbone(r)] for r in rows if backbone(r) in by_model}
    keep = [by_model[m] for m in (f"pad-{backbone(r)}" for r in rows if r["model"] == backbone(r)) if m in by_model]
    title = f"{dataset}: NDCG@10 per item-popularity bin (bin1 = most popular), full ranking, mean ± std over seeds"
    out = ROOT / "results" / f"pad_{dataset}.png"
    return plot_groups(series, out, groups, errors, title=title, baseline=baseline, keep=keep, max_series=max_series)


def _markdown(records: list[dict]) -> str:
    lines = [
        "| dataset | model | seeds | HR@10 | NDCG@10 | cold NDCG@10 | "
        + " | ".join(f"bin{i}" for i in range(1, 11))
        + " |",
        "|---" * 16 + "|",
    ]
    for r in records:
        if r["task"] != "accuracy":
            continue
        m, g = r["metrics"], r.get("groups", {})

        def cell(d: dict) -> str:
            return f"{d['NDCG@10']:.4f}" if "NDCG@10" in d else "–"

        lines.append(
            f"| {r['dataset']} | {r['model']} | {len(r['seeds'])} | {m['HR@10']:.4f} ± {m['HR@10_std']:.4f} | "
            f"{m['NDCG@10']:.4f} ± {m['NDCG@10_std']:.4f} | {cell(g.get('cold', {}))} | "
            + " | ".join(cell(g.get(f"bin{i}", {})) for i in range(1, 11))
            + " |"
        )
    lines.append("\nPer-bin cells are NDCG@10 (bin1 = most popular).")
    for r in records:
        m = r["metrics"]
        if r["task"] == "accuracy" and "concordance_before_spearman" in m:
            lines.append(
                f"- {r['dataset']} {r['model']} concordance of id vs text neighbourhoods (seed {r['seeds'][0]}), "
                f"before → after alignment: overlap@10 {m['concordance_before_overlap_at_k']:.4f} → "
                f"{m['concordance_after_overlap_at_k']:.4f}, Spearman {m['concordance_before_spearman']:.4f} → "
                f"{m['concordance_after_spearman']:.4f}"
            )
    for r in records:
        m = r["metrics"]
        if r["task"] == "accuracy" and "expert_collab_NDCG@10" in m:
            names = [k.split("_")[1] for k in m if k.startswith("expert_") and k.endswith("_cold_NDCG@10")]
            parts = ", ".join(
                f"{n} {m[f'expert_{n}_NDCG@10']:.4f} (cold {m[f'expert_{n}_cold_NDCG@10']:.4f}, "
                f"gate bin1 {m[f'gate_{n}_bin1']:.2f} / bin10 {m[f'gate_{n}_bin10']:.2f})"
                for n in names
            )
            who = f"{r['dataset']} {r['model']}"
            if "text_tower_NDCG@10" in m:
                parts += (
                    f"; text tower trained alone, before stage 3: {m['text_tower_NDCG@10']:.4f} "
                    f"(cold {m['text_tower_cold_NDCG@10']:.4f})"
                )
            lines.append(f"- {who} each expert alone, test NDCG@10 (seed {r['seeds'][0]}): {parts}")
    lines.append("\nServing cost:")
    for r in records:
        if r["task"] == "speed":
            m = r["metrics"]
            lines.append(
                f"- {r['dataset']} {r['model']}: {m['score_ms_pad']:.1f} ms vs backbone "
                f"{m['score_ms_backbone']:.1f} ms = {m['serving_cost_ratio']:.2f}x ({r['note']})"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
