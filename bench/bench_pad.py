"""PAD vs its backbone: accuracy per popularity bin over seeds, validation numbers, new items, serving cost.

    python bench/bench_pad.py --dataset amazon-beauty --backbone sasrec --seeds 0 1 2 [key=value ...]
    python bench/bench_pad.py --dataset ml-1m --seeds 0 1 2 --presets paper simfrozen
    python bench/bench_pad.py --dataset ml-1m --seeds 0 1 2 --presets paper simfrozen --new-items 0.05
    python bench/bench_pad.py --choose-default

(``key=value`` overrides go before the options taking several values, or after ``--``.)

For each seed a PAD run directory ``bench/.work/pad/<dataset>/<backbone>[-<preset>][-<variant>]-seed<k>`` is created
(finished stages are reused, so an interrupted benchmark continues; a directory holding a run made with other
settings is refused). The backbone of seed 0 can be an existing run (``--pretrained DIR``) to avoid training it
twice. ``--presets`` runs each named PAD preset (padrec.pad.pipeline.PRESETS; ``key=value`` overrides go on top)
on the same backbone per seed: it is trained once, with the first preset, and copied to the others. Seeds can
run as separate processes: ``--add-seeds`` adds a run's seeds to the stored records made with the same settings.

Records (MISSION.md §5): models ``<backbone>``, ``pad-<backbone>`` (preset paper, or no preset), ``-<preset>`` for
the other presets, ``-<variant>`` for ablations; protocol ``full-loo``; metrics HR@10/NDCG@10 on the test users
as mean over seeds (``_std`` alongside), groups ``bin1``..``bin10``, ``cold``, ``warm``. Every accuracy record also
holds ``valid``: HR@10/NDCG@10 on the validation users (their leave-one-out validation item, full ranking, history
masked), overall and for the cold and warm groups, of the final model (the best-on-validation checkpoint early
stopping restored), mean ± std over seeds; ``config`` holds the preset and the overrides that produced it;
``per_seed`` holds each seed's test and validation numbers, each stage's ``epochs`` and ``best_epoch``, and (PAD
records) ``backbone_valid``, the validation numbers of the very backbone that PAD seed was built on.

``--new-items SHARE`` runs the new-item protocol (padrec.eval.newitems) instead: per seed ``k`` the same seeded
``SHARE`` of the items (drawn with seed ``k``) is held out of training entirely, the backbone and every preset are
trained without them (``bench/.work/pad/<dataset>/newitems<SHARE>/...``), PAD adds them from their text, and the
test users whose last item is held out are ranked against the whole catalogue. Records: task ``newitems``,
protocol ``full-newitems``, ``share``, HR@10/NDCG@10 on those users (mean ± std over seeds), ``users`` (how many
per seed), ``held_items``, ``seeds``, and the runs' validation numbers.

``--choose-default`` trains nothing: it reads pad.json and picks the PAD default on validation users only. Rule
(:func:`choose_default` in full): among the presets measured on both ml-1m and amazon-beauty whose validation
NDCG@10 on cold items does not drop below their own backbone's on either dataset, the one with the best mean over
the two datasets of the relative change of validation NDCG@10 over its own backbone; ties go to the preset listed
first (paper). It refuses when a preset's validation numbers are missing, and never reads test numbers.

Serving cost: time to score all items for a batch of users, PAD vs backbone, same run, alternating order, median
of 9. ``--results DIR`` (default bench/results) and ``--work DIR`` (default bench/.work/pad) move the result files
and the run directories (tests use both).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from padrec.data.registry import load_dataset
from padrec.data.split import COUNT_GROUPS, leave_one_out
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.eval.report import git_commit, merge_bench
from padrec.models import Recommender
from padrec.pad.pipeline import CALIBRATE_KEYS, PRESETS, comparison_table, evaluate_stages, run_pad, with_preset
from padrec.train.config import parse_overrides

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "pad"
RESULTS = ROOT / "results"
GROUPS = [*(f"bin{i}" for i in range(1, 11)), "unseen", "cold", "warm", *COUNT_GROUPS]
#: validation groups a record keeps (overall is always kept)
VALID_GROUPS = ("cold", "warm")
#: the datasets the PAD default is chosen on (issue #20)
STUDY_DATASETS = ("ml-1m", "amazon-beauty")
#: records that hold per-seed values which later seeds can be added to
SEEDED_TASKS = ("accuracy", "newitems")


def _hr_ndcg(d: dict) -> dict:
    return {m: d[m] for m in ("HR@10", "NDCG@10") if m in d}


def _valid_values(result) -> dict:
    """Validation HR/NDCG@10 of one seed's model, overall and for the cold and warm groups, with user counts."""
    groups = {g: {**_hr_ndcg(result.groups[g]), "users": int(result.groups[g]["users"])}
              for g in VALID_GROUPS if g in result.groups}  # fmt: skip
    return {**_hr_ndcg(result.overall), "users": result.n_users, "groups": groups}


def _select_values(model, split, seed: int) -> dict:
    """Validation HR/NDCG@10 (overall, cold) on the selection half of the validation users of ``seed``: the users
    gate calibration (padrec.pad.calibrate) never sees, so every configuration is compared on untouched users."""
    from padrec.eval.metrics import metrics_from_ranks
    from padrec.pad.calibrate import validation_halves

    ev = Evaluator(split, Protocol())
    _, users = validation_halves(split, seed)
    ranks = ev.ranks(model, "valid", subset=users)
    cold = ev.group_labels("valid")["cold"][users]
    m, c = metrics_from_ranks(ranks, (10,)), metrics_from_ranks(ranks[cold], (10,))
    return {**_hr_ndcg(m), "users": len(users), "groups": {"cold": {**_hr_ndcg(c), "users": int(cold.sum())}}}


def _seed_values(result, seed: int, valid=None, backbone_valid=None, epochs: dict | None = None) -> dict:
    """One seed's HR/NDCG@10, overall and per group: what a record keeps so later seeds can be added. ``valid``:
    the same model's validation results; ``backbone_valid``: those of the backbone this PAD seed was built on."""
    groups = {g: {**_hr_ndcg(result.groups[g]), "users": int(result.groups[g].get("users", 0))}
              for g in GROUPS if g in result.groups and _hr_ndcg(result.groups[g])}  # fmt: skip
    out = {"seed": seed, **_hr_ndcg(result.overall), "groups": groups}
    if valid is not None:
        out["valid"] = _valid_values(valid)
    if backbone_valid is not None:
        out["backbone_valid"] = _valid_values(backbone_valid)
    if epochs:
        out["epochs"] = epochs
    return out


def _test_values(result) -> dict:
    """Test HR/NDCG@10 overall and on cold items: a PAD seed keeps its own backbone's, to be compared pairwise."""
    return {**_hr_ndcg(result.overall), "groups": {"cold": _hr_ndcg(result.groups.get("cold", {}))}}


def _agg(dicts: list[dict]) -> dict:
    out = {}
    for m in ("HR@10", "NDCG@10"):
        vals = [d[m] for d in dicts if m in d]
        if vals:
            out[m] = float(np.mean(vals))
            out[f"{m}_std"] = float(np.std(vals))
    return out


def _aggregate(per_seed: list[dict]) -> tuple[dict, dict]:
    """Mean and std over seeds of the overall metrics and of each group's."""
    # a group every seed reports (a seed stored before a group existed must not turn a mean into one seed's)
    groups = {g: _agg([s["groups"][g] for s in per_seed]) for g in GROUPS if all(g in s["groups"] for s in per_seed)}
    for g, v in groups.items():  # the same split for every seed: one user count per group
        counts = {s["groups"][g].get("users") for s in per_seed}
        if len(counts) == 1 and None not in counts:
            v["users"] = counts.pop()
    return _agg(per_seed), {g: v for g, v in groups.items() if v}


def _aggregate_valid(per_seed: list[dict]) -> dict | None:
    """Mean and std over seeds of the validation numbers; None unless every seed has them (a seed stored before
    they were recorded must not turn the mean into the other seeds')."""
    if not per_seed or not all("valid" in s for s in per_seed):
        return None
    vals = [s["valid"] for s in per_seed]
    groups = {g: _agg([v["groups"][g] for v in vals]) for g in VALID_GROUPS if all(g in v["groups"] for v in vals)}
    return {"stage": "valid", "metrics": _agg(vals), "groups": groups}


def _device() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _finish(rec: dict) -> dict:
    """``rec``'s aggregates (metrics, groups, valid; new items: users, held_items) recomputed from ``per_seed``."""
    per_seed = rec["per_seed"]
    metrics, groups = _aggregate(per_seed)
    rec["metrics"] = {**rec.get("metrics", {}), **metrics}  # keeps seed-0 extras (experts, concordance)
    rec["groups"] = groups
    valid = _aggregate_valid(per_seed)
    if valid is None:
        rec.pop("valid", None)
    else:
        rec["valid"] = valid
    rec["seeds"] = [s["seed"] for s in per_seed]
    if rec["task"] == "newitems":
        rec["users"] = [s["users"] for s in per_seed]
        rec["held_items"] = per_seed[0]["held_items"]
    return rec


def _mean_record(
    name: str, per_seed: list[dict], dataset: str, protocol: str, note: str, config: dict, task: str = "accuracy"
) -> dict:
    rec = {"task": task, "dataset": dataset, "model": name, "protocol": protocol}
    if task == "newitems":
        rec["share"] = config["share"]
    rec.update(
        per_seed=per_seed,
        device=_device(),
        config=config,
        commit=git_commit(),
        date=time.strftime("%Y-%m-%d"),
        note=note,
    )
    return _finish(rec)


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
    out = dict(stored)
    out["per_seed"] = sorted(_stored_seeds(stored) + new["per_seed"], key=lambda s: s["seed"])
    out.update(config=new["config"], date=new["date"])
    out["commit"] = f"{stored['commit']}+{new['commit']}"
    if "own_backbone" in new:  # a preset with a backbone of its own: that backbone's seeds are added as well
        had = stored.get("own_backbone", {}).get("per_seed", [])
        out["own_backbone"] = _own_backbone(had + new["own_backbone"]["per_seed"])
    # what the later run's note says that the stored one does not (its own --note, its stages' epochs) is kept
    extra = [part for part in new["note"].split("; ") if part and part not in stored["note"]]
    said = f": {'; '.join(extra)}" if extra else ""
    out["note"] = f"{stored['note']}; seeds {new['seeds']} added by a later run (commit {new['commit']}){said}"
    return _finish(out)


def _own_backbone(per_seed: list[dict]) -> dict:
    """The ``own_backbone`` entry of a preset that trains a backbone of its own: its per-seed test numbers and their
    mean ± std (kept per seed so that ``--add-seeds`` can add to it)."""
    per_seed = sorted(per_seed, key=lambda s: s["seed"])
    metrics, groups = _aggregate(per_seed)
    return {"seeds": [s["seed"] for s in per_seed], "per_seed": per_seed, "metrics": metrics, "groups": groups}


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


def pad_name(backbone: str, preset: str | None = None, variant: str = "") -> str:
    """``pad-<backbone>`` for no preset or ``paper``, ``-<preset>`` for the others, then ``-<variant>``."""
    parts = [f"pad-{backbone}", *([preset] if preset not in (None, "paper") else []), *([variant] if variant else [])]
    return "-".join(parts)


def _variants(backbone: str, presets: list[str] | None, variant: str, overrides: dict) -> list[tuple]:
    """(record name, preset, the overrides it runs with) for every PAD configuration of this call."""
    if not presets:
        return [(pad_name(backbone, None, variant), None, overrides)]
    return [(pad_name(backbone, p, variant), p, with_preset(p, overrides)) for p in dict.fromkeys(presets)]


def _run_dir(work: Path, dataset: str, backbone: str, name: str, seed: int, share: float | None = None) -> Path:
    base = work / dataset / (f"newitems{share:g}" if share is not None else "")
    return base / f"{backbone}{name.removeprefix(f'pad-{backbone}')}-seed{seed}"


def _json_norm(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


#: PAD keys only stage 3 reads: configurations differing in these alone share one align stage per seed
STAGE3_KEYS = frozenset(
    {"experts", "freeze", "learn_gates", "n_bins", "expert_loss", "text_init", "similarity_scale", "gate_lr",
     *CALIBRATE_KEYS}
)  # fmt: skip


def _align_key(overrides: dict) -> str | None:
    """What the align stage depends on (None: the configuration has no aligned expert, so no align stage)."""
    if "aligned" not in overrides.get("experts", ("aligned",)):
        return None
    return json.dumps(_json_norm({k: v for k, v in overrides.items() if k not in STAGE3_KEYS}), sort_keys=True)


def _pad_key(overrides: dict) -> str:
    """What stage 3 depends on: everything but the calibration settings, a step after it (a calibrated configuration
    starts from the very stage 3 of its uncalibrated twin, so both are trained once)."""
    return json.dumps(_json_norm({k: v for k, v in overrides.items() if k not in CALIBRATE_KEYS}), sort_keys=True)


def _prepare_run_dir(
    run_dir: Path,
    backbone_from: Path | None,
    overrides: dict,
    align_from: Path | None = None,
    pad_from: Path | None = None,
) -> None:
    """Refuse a run directory holding a finished run made with other settings (its stages would be reused as they
    are); copy a trained backbone (``backbone_from``, a finished pretrain stage) in when the run has none yet, and
    likewise a finished align stage (``align_from``) trained on that backbone with the same settings, and a
    finished, uncalibrated stage 3 (``pad_from``) for a configuration that only adds calibration."""
    stored = run_dir / "pad.json"
    if stored.exists():
        had = json.loads(stored.read_text()).get("overrides")
        if had != _json_norm(overrides):
            raise SystemExit(
                f"{run_dir} holds a PAD run made with other settings ({had}; this call: {_json_norm(overrides)}): "
                "its finished stages would be reused as they are; remove it, or choose another --work"
            )
    if backbone_from is not None and not (run_dir / "pretrain").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(backbone_from, run_dir / "pretrain", ignore=shutil.ignore_patterns("checkpoints"))
    if align_from is not None and not (run_dir / "align").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(align_from, run_dir / "align", ignore=shutil.ignore_patterns("checkpoints"))
    if pad_from is not None and not (run_dir / "pad").exists():
        shutil.copytree(pad_from, run_dir / "pad", ignore=shutil.ignore_patterns("checkpoints", "calibration.json"))


def _backbone_key(overrides: dict) -> str:
    """What the backbone depends on besides the seed: its ``backbone.*`` keys (a preset that changes them, such as
    ``paper-official`` or ``paper-bce``, trains a backbone of its own)."""
    keys = {k: v for k, v in overrides.items() if k.startswith("backbone.") and k not in _SEED_KEYS}
    return json.dumps(_json_norm(keys), sort_keys=True)


_SEED_KEYS = frozenset({"backbone.seed", "backbone.progress"})


class _SeedStages:
    """One seed's finished stages, handed on to the next configuration of that seed: the first configuration of
    each backbone setting (:func:`_backbone_key`) trains that backbone (unless ``pretrained`` is given for the
    call's own ``overrides``) and the others copy it; align stages and uncalibrated stage 3s likewise, to
    configurations that cannot tell them apart (:func:`_align_key`, :func:`_pad_key`)."""

    def __init__(self, pretrained: Path | None = None, overrides: dict | None = None) -> None:
        self.backbones: dict[str, Path] = {} if pretrained is None else {_backbone_key(overrides or {}): pretrained}
        self.aligns: dict[str, Path] = {}
        self.pads: dict[str, Path] = {}

    def prepare(self, run_dir: Path, seeded: dict) -> None:
        _prepare_run_dir(
            run_dir,
            self.backbones.get(_backbone_key(seeded)),
            seeded,
            self.aligns.get(_align_key(seeded)),
            self.pads.get(_pad_key(seeded)),
        )

    def finished(self, run_dir: Path, seeded: dict) -> None:
        self.backbones.setdefault(_backbone_key(seeded), run_dir / "pretrain")
        if _align_key(seeded) is not None:
            self.aligns.setdefault(_align_key(seeded), run_dir / "align")
        if not seeded.get("calibrate"):  # a calibrated stage 3 is not its twin's
            self.pads.setdefault(_pad_key(seeded), run_dir / "pad")


def _epochs(run_dir: Path, stages: tuple[str, ...] = ("pretrain", "align", "text-expert", "pad")) -> dict:
    """Each finished stage's trained epochs and best (restored) epoch, from its train.json."""
    out = {}
    for k in stages:
        path = run_dir / k / "train.json"
        if path.exists():  # no align stage without the aligned expert, no text-expert stage without text_init
            t = json.loads(path.read_text())
            out[k] = {"epochs": t.get("epochs"), "best_epoch": t.get("best_epoch")}
    return out


def _config(backbone: str, encoder: str, preset: str | None, overrides: dict, **extra: Any) -> dict:
    return {"backbone": backbone, "encoder": encoder, "preset": preset, "overrides": overrides, **extra}


def _backbone_overrides(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if k.startswith("backbone.")}


def accuracy_records(args: argparse.Namespace, overrides: dict) -> list[dict]:
    """Train (or finish) the backbone and every PAD configuration for every seed; their records."""
    split = leave_one_out(load_dataset(args.dataset))
    variants = _variants(args.backbone, args.presets, args.variant, overrides)
    base_res: list[dict] = []
    pad_res: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
    first: dict[str, Any] = {}  # name -> the first seed's run
    bb = args.backbone
    own_bb: dict[str, list[dict]] = {}  # presets with a backbone of their own: its per-seed test numbers
    call_key = _backbone_key(overrides)  # the call's own backbone (the --pretrained one, the backbone row)
    for seed in args.seeds:
        stages = _SeedStages(args.pretrained, overrides)
        selects: dict[str, dict] = {}  # backbone key -> that backbone's numbers on the selection half
        base_done = False
        for name, _, over in variants:
            run_dir = _run_dir(args.work, args.dataset, bb, name, seed)
            seeded = {"backbone.seed": seed, "seed": seed, "progress": False, "backbone.progress": False, **over}
            stages.prepare(run_dir, seeded)
            out = run_pad(split, run_dir, backbone=bb, encoder=args.encoder, overrides=seeded)
            stages.finished(run_dir, seeded)
            print(comparison_table(out.results), flush=True)
            valid = evaluate_stages(out, split, stage="valid")
            epochs = _epochs(run_dir)
            key = _backbone_key(over)
            if key not in selects:
                selects[key] = _select_values(out.backbone, split, seed)
            if key == call_key and not base_done:  # the call's own backbone: its row
                base_done = True
                base_epochs = {s: v for s, v in epochs.items() if s == "pretrain"}
                base_res.append(_seed_values(out.results[bb], seed, valid[bb], epochs=base_epochs))
                base_res[-1]["valid_select"] = selects[key]
            elif key != call_key:
                own_bb.setdefault(name, []).append(_seed_values(out.results[bb], seed))
            values = _seed_values(out.results[f"pad-{bb}"], seed, valid[f"pad-{bb}"], valid[bb], epochs)
            values["backbone_test"] = _test_values(out.results[bb])  # the test numbers of the backbone it was built on
            values["valid_select"] = _select_values(out.pad, split, seed)
            values["backbone_valid_select"] = selects[key]
            if (run_dir / "pad" / "calibration.json").exists():
                values["calibration"] = json.loads((run_dir / "pad" / "calibration.json").read_text())
            pad_res[name].append(values)
            first.setdefault(name, out)
    protocol = next(iter(first.values())).results[bb].protocol
    new: list[dict] = []
    if not args.variant and base_res:  # no row when every preset of the call trained a backbone of its own
        config = _config(bb, args.encoder, None, _backbone_overrides(overrides))
        note = _note(args, _backbone_overrides(overrides), base_res[0].get("epochs", {}))
        new.append(_mean_record(bb, base_res, args.dataset, protocol, note, config))
    for name, preset, over in variants:
        run = first[name]
        cost = serving_cost(run.backbone, run.pad, split)
        rec = _mean_record(
            name,
            pad_res[name],
            args.dataset,
            protocol,
            _note(args, over, pad_res[name][0].get("epochs", {}), cost),
            _config(bb, args.encoder, preset, over),
        )
        rec["metrics"].update(_concordance(run.run_dir))
        rec["metrics"].update(expert_breakdown(run.pad, split))
        if name in own_bb:  # the preset's backbone.* keys trained a backbone of its own: the row to compare it with
            rec["own_backbone"] = _own_backbone(own_bb[name])
        if "text-only" in run.results:  # text_init=pretrain: the text tower alone, before stage 3
            tower = run.results["text-only"]
            rec["metrics"]["text_tower_NDCG@10"] = tower.overall["NDCG@10"]
            rec["metrics"]["text_tower_cold_NDCG@10"] = tower.groups["cold"]["NDCG@10"]
        new.append(rec)
        if not args.variant:
            new.append(_speed_record(args.dataset, name, args.seeds, cost))
    return new


def new_item_records(args: argparse.Namespace, overrides: dict) -> list[dict]:
    """The new-item protocol for the backbone and every PAD configuration, every seed; task ``newitems`` records."""
    from padrec.eval.newitems import PROTOCOL, new_item_split
    from padrec.pad.pipeline import new_item_results, new_item_table, new_item_text

    ds = load_dataset(args.dataset)
    variants = _variants(args.backbone, args.presets, args.variant, overrides)
    bb, share = args.backbone, args.new_items
    per_seed: dict[str, list[dict]] = {bb: [], **{name: [] for name, _, _ in variants}}
    call_key = _backbone_key(overrides)
    for seed in args.seeds:
        ns = new_item_split(ds, share, seed)  # the same held-out items for the backbone and every preset
        full_text, text = new_item_text(ns, args.encoder)
        stages = _SeedStages()  # never --pretrained: that backbone trained on the held-out items
        base_done = False
        for name, _, over in variants:
            run_dir = _run_dir(args.work, args.dataset, bb, name, seed, share)
            seeded = {"backbone.seed": seed, "seed": seed, "progress": False, "backbone.progress": False, **over}
            stages.prepare(run_dir, seeded)
            out = run_pad(ns.train, run_dir, backbone=bb, encoder=args.encoder, overrides=seeded, text=text,
                          evaluate=False)  # fmt: skip
            stages.finished(run_dir, seeded)
            fresh = new_item_results(out, ns, args.encoder, full_text)
            print(f"{name}, seed {seed}:\n{new_item_table(fresh, share)}", flush=True)
            valid = evaluate_stages(out, ns.train, stage="valid")
            epochs = _epochs(run_dir)
            if _backbone_key(over) == call_key and not base_done:  # the call's own backbone
                base_done = True
                base_epochs = {s: v for s, v in epochs.items() if s == "pretrain"}
                per_seed[bb].append(_new_item_values(fresh[bb], seed, len(ns.held), valid[bb], None, base_epochs))
            pad_values = _new_item_values(fresh[f"pad-{bb}"], seed, len(ns.held), valid[f"pad-{bb}"], valid[bb], epochs)
            per_seed[name].append(pad_values)
    over_of = {name: (preset, over) for name, preset, over in variants}
    over_of[bb] = (None, _backbone_overrides(overrides))
    new = []
    for name, seeds in per_seed.items():
        if (name == bb and args.variant) or not seeds:  # an ablation's backbone is not the reference one; no
            continue  # backbone row when every preset trained its own
        preset, over = over_of[name]
        note = _note(args, over, seeds[0]["epochs"]) + (
            f"; new items: {100 * share:g}% of the items held out of training (drawn with each seed), added "
            "afterwards from text; test users whose last item is held out, ranked against every item"
        )
        config = _config(bb, args.encoder, preset, over, share=share)
        new.append(_mean_record(name, seeds, args.dataset, PROTOCOL, note, config, task="newitems"))
    return new


def _new_item_values(res, seed: int, held: int, valid, backbone_valid, epochs: dict) -> dict:
    """One seed's new-item numbers: HR/NDCG@10 on the users whose target is held out, how many they are, how many
    of them the model could score at all, how many items were held out; validation numbers as for accuracy."""
    out = _seed_values(res, seed, valid, backbone_valid, epochs)
    scorable = int(res.groups.get("scorable", {}).get("users", 0))
    return {**out, "users": res.n_users, "scorable": scorable, "held_items": held, "groups": {}}


def _note(args: argparse.Namespace, overrides: dict, epochs: dict, cost: dict | None = None) -> str:
    parts = [
        args.note,
        f"encoder {args.encoder}; full ranking, history masked; early stopping on valid NDCG@10",
        f"stage epochs (seed {args.seeds[0]}): {epochs}; overrides {overrides}",
        f"serving {cost}" if cost else "",
    ]
    return "; ".join(p for p in parts if p)


def choose_default(
    records: list[dict], backbone: str = "sasrec", datasets: tuple[str, ...] = STUDY_DATASETS
) -> dict[str, Any]:
    """Pick the PAD default on validation users only; test numbers are never read.

    Rule. Candidates are the presets (``padrec.pad.pipeline.PRESETS``) with an accuracy record ``pad-<backbone>``
    (paper) or ``pad-<backbone>-<preset>`` made with ``--presets`` on every one of ``datasets`` (ml-1m and
    amazon-beauty). For preset P on dataset d, over the record's seeds, paired with the backbone each seed was
    built on (``backbone_valid``)::

        rel(P, d)      = mean_seeds(valid NDCG@10 of PAD) / mean_seeds(valid NDCG@10 of its backbone) - 1
        rel_cold(P, d) = the same on the validation users whose item is cold (popularity bins 8-10)

    P is eligible when ``rel_cold(P, d) >= 0`` on every dataset (it does not lose on cold items anywhere: that is
    what PAD is for). The winner is the eligible preset with the highest ``mean_d rel(P, d)``; ties go to the
    preset listed first in PRESETS (``paper``, the published design). No eligible preset: no winner (the default
    stays as it is). Records with a ``--variant`` label are not candidates.

    Raises SystemExit when no preset has records on every dataset, or when a candidate's record lacks validation
    numbers (every seed's ``valid`` and ``backbone_valid``) or was not made with ``--presets``: a choice made on
    some presets' numbers, or on test numbers, is what this refuses.

    Returns ``{"winner": P or None, "rule": str, "presets": {P: {"score", "eligible", "datasets": {d: {...}}}},
    "skipped": {P: reason}}``.
    """
    acc = {(r["dataset"], r["model"]): r for r in records if r.get("task") == "accuracy"}
    # the selection half of the validation users when every candidate seed has it (calibration chose on the other
    # half; comparing there is fair to calibrated and uncalibrated presets alike), else every validation user
    candidates = [
        acc[(d, pad_name(backbone, p))] for p in PRESETS for d in datasets if (d, pad_name(backbone, p)) in acc
    ]
    seeds_all = [s for r in candidates for s in r.get("per_seed") or []]
    key = "valid_select" if seeds_all and all("backbone_valid_select" in s for s in seeds_all) else "valid"
    problems: list[str] = []
    table: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for preset in PRESETS:
        name = pad_name(backbone, preset)
        present = [d for d in datasets if (d, name) in acc]
        if len(present) < len(datasets):
            missing = [d for d in datasets if d not in present]
            skipped[preset] = f"no {name} record on {', '.join(missing)}"
            continue
        per_dataset = {}
        for d in datasets:
            rec = acc[(d, name)]
            seeds = rec.get("per_seed") or []
            lacking = [s.get("seed") for s in seeds if key not in s or f"backbone_{key}" not in s]
            why = [f"no validation numbers for seeds {lacking or rec.get('seeds')}"] if not seeds or lacking else []
            if (rec.get("config") or {}).get("preset") != preset:
                why.append(f"not made with --presets {preset} (no preset in its config)")
            if why:
                problems.append(f"{d} {name}: {'; '.join(why)}")
            else:
                per_dataset[d] = _relative(seeds, name, d, problems, key)
            if PRESETS[preset].get("calibrate") and key != "valid_select":
                problems.append(f"{d} {name}: a calibrated preset needs numbers on the selection half (valid_select)")
        if len(per_dataset) == len(datasets) and all(v is not None for v in per_dataset.values()):
            eligible = all(v["rel_cold"] >= 0 for v in per_dataset.values())
            score = float(np.mean([v["rel"] for v in per_dataset.values()]))
            table[preset] = {"score": score, "eligible": eligible, "datasets": per_dataset}
    if problems:
        raise SystemExit(
            "cannot choose the PAD default: validation numbers are missing\n  "
            + "\n  ".join(problems)
            + "\nrerun those records with bench/bench_pad.py --presets ... --replace (they must hold each seed's "
            "validation NDCG@10 and that of its backbone)"
        )
    if not table:
        raise SystemExit(
            f"cannot choose the PAD default: no preset has {backbone} records on every one of {', '.join(datasets)} "
            f"({'; '.join(f'{p}: {why}' for p, why in skipped.items())}); run bench/bench_pad.py --presets "
            f"{' '.join(PRESETS)} on each dataset first"
        )
    eligible = [p for p in table if table[p]["eligible"]]  # PRESETS order: ties go to the earlier one
    winner = max(eligible, key=lambda p: table[p]["score"]) if eligible else None
    rule = (
        "best mean (over " + " and ".join(datasets) + ") relative change of validation NDCG@10 over its own backbone, "
        "among presets that do not lose validation NDCG@10 on cold items on any dataset; users: "
        + ("the selection half of the validation users" if key == "valid_select" else "every validation user")
    )
    return {"winner": winner, "rule": rule, "presets": table, "skipped": skipped, "users": key}


def _seed_mean(seeds: list[dict], key: str, cold: bool = False) -> float | None:
    """Mean over seeds of the NDCG@10 each seed stores under ``key`` (overall, or its cold group); None when a seed
    lacks it."""
    vals = [((s.get(key) or {}).get("groups", {}).get("cold", {}) if cold else s.get(key) or {}) for s in seeds]
    got = [v.get("NDCG@10") for v in vals]
    return None if None in got else float(np.mean(got))


def _relative(seeds: list[dict], name: str, dataset: str, problems: list[str], key: str = "valid") -> dict | None:
    """Relative change of validation NDCG@10 (overall and cold) of one PAD record over its own backbone, from the
    seeds' ``key`` numbers (``valid``: every validation user; ``valid_select``: the selection half)."""
    pad, base = _seed_mean(seeds, key), _seed_mean(seeds, f"backbone_{key}")
    pad_cold, base_cold = _seed_mean(seeds, key, cold=True), _seed_mean(seeds, f"backbone_{key}", cold=True)
    if None in (pad, base, pad_cold, base_cold) or not base or not base_cold:
        problems.append(f"{dataset} {name}: validation NDCG@10 (overall and cold, PAD and backbone) incomplete or 0")
        return None
    return {
        "seeds": [s["seed"] for s in seeds],
        "backbone": base,
        "pad": pad,
        "rel": pad / base - 1,
        "backbone_cold": base_cold,
        "pad_cold": pad_cold,
        "rel_cold": pad_cold / base_cold - 1,
    }


def choice_table(choice: dict[str, Any]) -> str:
    """The table ``--choose-default`` prints, and its verdict."""
    lines = [
        "PAD default chosen on validation users (leave-one-out validation item, full ranking, history masked)",
        f"{'preset':>14s}  {'dataset':>14s}  {'seeds':>7s}  {'backbone':>8s}  {'PAD':>8s}  {'change':>7s}  "
        f"{'bb cold':>8s}  {'PAD cold':>8s}  {'cold chg':>8s}",
    ]
    for preset, row in choice["presets"].items():
        for d, v in row["datasets"].items():
            seeds = ",".join(map(str, v["seeds"]))
            lines.append(
                f"{preset:>14s}  {d:>14s}  {seeds:>7s}  {v['backbone']:8.4f}  {v['pad']:8.4f}  "
                f"{100 * v['rel']:+6.1f}%  {v['backbone_cold']:8.4f}  {v['pad_cold']:8.4f}  "
                f"{100 * v['rel_cold']:+7.1f}%"
            )
        verdict = "eligible" if row["eligible"] else "not eligible: loses on cold items"
        lines.append(f"{preset:>14s}  mean change of valid NDCG@10 {100 * row['score']:+.1f}% ({verdict})")
    for preset, why in choice["skipped"].items():
        lines.append(f"{preset:>14s}  not compared: {why}")
    lines.append(f"rule: {choice['rule']}")
    winner = choice["winner"]
    lines.append(f"winner: {winner}" if winner else "winner: none (no preset qualifies; keep the current default)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--backbone", default="sasrec")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--presets",
        nargs="+",
        choices=list(PRESETS),
        help="PAD presets to run on the same backbone (records pad-BACKBONE for paper, pad-BACKBONE-PRESET else)",
    )
    ap.add_argument("--variant", default="", help="ablation label, e.g. 'nolam' -> model pad-sasrec-nolam")
    ap.add_argument("--pretrained", type=Path, help="an existing backbone run dir to reuse for every seed")
    ap.add_argument("--encoder", default="minilm", help="text encoder: minilm, mpnet or a model folder")
    ap.add_argument("--new-items", type=float, metavar="SHARE", help="run the new-item protocol with this share")
    ap.add_argument("--choose-default", action="store_true", help="pick the PAD default from pad.json (no training)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of pad.json, pad.md and the plots")
    ap.add_argument("--work", type=Path, default=WORK, help="folder of the run directories")
    ap.add_argument("--note", default="")
    ap.add_argument("--replace", action="store_true", help="overwrite a stored record over more seeds")
    ap.add_argument(
        "--add-seeds",
        action="store_true",
        help="add these seeds to the stored records of the same settings (seeds run as separate processes)",
    )
    ap.add_argument("--serving-only", action="store_true", help="re-time serving of the first seed's finished run")
    ap.add_argument(
        "--merge-from",
        type=Path,
        metavar="DIR",
        help="merge the records of DIR/pad.json (a study run with --results DIR) into --results, replacing stored "
        "records of the same dataset and model (no training)",
    )
    ap.add_argument("--plot-only", action="store_true", help="redraw results/pad_<dataset>.png from pad.json only")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    if args.choose_default:
        path = args.results / "pad.json"
        if not path.exists():
            raise SystemExit(f"cannot choose the PAD default: {path} does not exist")
        print(choice_table(choose_default(json.loads(path.read_text())["records"], args.backbone)))
        return
    if args.merge_from:
        path = args.merge_from / "pad.json"
        if not path.exists():
            raise SystemExit(f"cannot merge: {path} does not exist")
        records = json.loads(path.read_text())["records"]
        _merge(records, args.results, replace=True)
        print(f"merged {len(records)} records from {path} into {args.results / 'pad.json'}")
        return
    if args.plot_only:
        records = json.loads((args.results / "pad.json").read_text())["records"]
        print(_plot(records, args.dataset, args.results))
        return
    if args.serving_only:
        split = leave_one_out(load_dataset(args.dataset))
        run_dir = args.work / args.dataset / f"{args.backbone}-seed{args.seeds[0]}"
        cost = serving_cost(Recommender.load(run_dir / "pretrain"), Recommender.load(run_dir / "pad"), split)
        print(cost)
        _update_speed(args.dataset, f"pad-{args.backbone}", args.seeds, cost, args.results)
        _update_concordance(args.dataset, f"pad-{args.backbone}", run_dir, args.results)
        return
    overrides = parse_overrides(args.overrides)
    if args.new_items is not None and args.pretrained:
        raise SystemExit("--pretrained cannot be used with --new-items: its backbone trained on the held-out items")
    if args.new_items is not None:
        new = new_item_records(args, overrides)
    else:
        new = accuracy_records(args, overrides)
    _merge(new, args.results, replace=args.replace, add_seeds=args.add_seeds)


def _speed_record(dataset: str, model: str, seeds: list[int], cost: dict) -> dict:
    return {
        "task": "speed",
        "dataset": dataset,
        "model": model,
        "protocol": "n/a",
        "device": _device(),
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
    return r["task"], r["dataset"], r["model"], r.get("share")


def _update_concordance(dataset: str, model: str, run_dir: Path, results: Path = RESULTS) -> None:
    values = _concordance(run_dir)

    def update(records: list[dict]) -> None:
        for r in records:
            if _key(r) == ("accuracy", dataset, model, None):
                r["metrics"].update(values)

    merge_bench("pad", [], _key, _markdown, update=update, results_dir=results)


def _update_speed(dataset: str, model: str, seeds: list[int], cost: dict, results: Path = RESULTS) -> None:
    _merge([_speed_record(dataset, model, seeds, cost)], results)


def _merge(new: list[dict], results: Path = RESULTS, replace: bool = False, add_seeds: bool = False) -> None:
    """Add ``new`` to pad.json; an accuracy or new-item record over more seeds is kept unless ``replace``; with
    ``add_seeds`` such a record's seeds are added to the stored one's (under the lock)."""

    def keep_old(old: dict, rec: dict) -> bool:
        keep = not replace and rec["task"] in SEEDED_TASKS and len(old["seeds"]) > len(rec["seeds"])
        if keep:
            print(
                f"kept the stored {rec['dataset']} {rec['model']} {rec['task']} record over seeds {old['seeds']} "
                f"(this run: {rec['seeds']}; --replace to overwrite it, --add-seeds to add to it)",
                flush=True,
            )
        return keep

    def add(records: list[dict]) -> None:
        for rec in (r for r in new if r["task"] in SEEDED_TASKS):
            hits = [k for k, r in enumerate(records) if _key(r) == _key(rec)]
            if hits:
                records[hits[0]] = _add_seeds(records[hits[0]], rec)
            else:
                records.append(rec)

    if add_seeds:
        rest = [r for r in new if r["task"] not in SEEDED_TASKS]
        records = merge_bench("pad", rest, _key, _markdown, update=add, results_dir=results)
    else:
        records = merge_bench("pad", new, _key, _markdown, keep_old, results_dir=results)
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib not installed: no per-bin plots", flush=True)
        return
    for dataset in sorted({r["dataset"] for r in new if r["task"] == "accuracy"}):
        _plot(records, dataset, results)


def _plot(records: list[dict], dataset: str, results: Path = RESULTS, max_series: int = 6) -> Path:
    """``<results>/pad_<dataset>.png``: NDCG@10 per popularity bin ± std over seeds, and each PAD row's change
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
    out = results / f"pad_{dataset}.png"
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
    lines += _count_markdown(records)
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
    lines += _valid_markdown(records)
    lines += _change_markdown(records)
    lines += _new_items_markdown(records)
    lines.append("\nServing cost:")
    for r in records:
        if r["task"] == "speed":
            m = r["metrics"]
            lines.append(
                f"- {r['dataset']} {r['model']}: {m['score_ms_pad']:.1f} ms vs backbone "
                f"{m['score_ms_backbone']:.1f} ms = {m['serving_cost_ratio']:.2f}x ({r['note']})"
            )
    return "\n".join(lines) + "\n"


def _count_markdown(records: list[dict]) -> list[str]:
    """Test NDCG@10 by the target's absolute training count (the same groups on every dataset, unlike the bins,
    which are relative to each catalogue), with each group's users; only records that stored these groups."""
    rows = [r for r in records if r["task"] == "accuracy" and any(c in r.get("groups", {}) for c in COUNT_GROUPS)]
    if not rows:
        return []
    lines = [
        "\nBy the test item's training count (NDCG@10; users in brackets; the same groups on every dataset):\n",
        "| dataset | model | seeds | " + " | ".join(COUNT_GROUPS) + " |",
        "|---" * (3 + len(COUNT_GROUPS)) + "|",
    ]
    for r in rows:
        g = r["groups"]
        cells = [f"{g[c]['NDCG@10']:.4f} ({g[c].get('users', '?')})" if c in g else "–" for c in COUNT_GROUPS]
        lines.append(f"| {r['dataset']} | {r['model']} | {len(r['seeds'])} | " + " | ".join(cells) + " |")
    return lines


def _pm(d: dict, m: str) -> str:
    return f"{d[m]:.4f} ± {d[f'{m}_std']:.4f}" if m in d else "–"


def _preset_of(r: dict) -> str:
    return (r.get("config") or {}).get("preset") or "–"


def _valid_markdown(records: list[dict]) -> list[str]:
    """pad.md's validation table: what the PAD default is chosen on (``--choose-default``)."""
    rows = [r for r in records if r["task"] == "accuracy" and "valid" in r]
    if not rows:
        return []
    lines = [
        "\nValidation users (leave-one-out validation item, full ranking, history masked; the best-on-validation "
        "model), mean ± std over seeds; the PAD default is chosen on these (`bench_pad.py --choose-default`):\n",
        "| dataset | model | preset | seeds | valid HR@10 | valid NDCG@10 | valid cold NDCG@10 | valid warm NDCG@10 |",
        "|---" * 8 + "|",
    ]
    for r in rows:
        v, g = r["valid"]["metrics"], r["valid"]["groups"]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {_preset_of(r)} | {len(r['seeds'])} | {_pm(v, 'HR@10')} | "
            f"{_pm(v, 'NDCG@10')} | {_pm(g.get('cold', {}), 'NDCG@10')} | {_pm(g.get('warm', {}), 'NDCG@10')} |"
        )
    return lines


def _pct(pad: float | None, base: float | None) -> str:
    return f"{100 * (pad / base - 1):+.1f}%" if pad is not None and base else "–"


#: training-budget settings the change table leaves out of its "extra settings" column
_BUDGET_KEYS = frozenset({"patience", "max_epochs", "length_buckets", "progress", "backbone.progress"})


def _change_markdown(records: list[dict]) -> list[str]:
    """pad.md's change table: every PAD record against the backbone it was built on, on validation users (paired
    per seed through ``backbone_valid``/``backbone_valid_select``) and on test users (paired per seed through
    ``backbone_test``; older records: its own backbone's row when its preset trained one, else the dataset's
    backbone record). This is the fidelity study at a glance."""
    acc = {(r["dataset"], r["model"]): r for r in records if r["task"] == "accuracy"}
    # records from before validation numbers were kept per seed were built on older backbones: left out
    rows = [
        r
        for r in acc.values()
        if r["model"].startswith("pad-") and r.get("per_seed") and all("backbone_valid" in s for s in r["per_seed"])
    ]
    if not rows:
        return []
    lines = [
        "\nChange of NDCG@10 over the backbone each PAD row was built on (cold = bins 8-10 + unseen); validation: "
        "the selection half of the validation users where stored, else every validation user, paired per seed:\n",
        "| dataset | model | preset | encoder | extra settings | seeds | valid overall | valid cold | test overall "
        "| test cold |",
        "|---" * 10 + "|",
    ]
    for r in rows:
        seeds = r["per_seed"]
        key = "valid_select" if all("backbone_valid_select" in s for s in seeds) else "valid"
        config = r.get("config") or {}
        if all("backbone_test" in s for s in seeds):  # paired per seed with the very backbone it was built on
            base_m = {"NDCG@10": _seed_mean(seeds, "backbone_test")}
            base_g = {"cold": {"NDCG@10": _seed_mean(seeds, "backbone_test", cold=True)}}
        else:  # older records: its own backbone's row, or the dataset's backbone record
            base = r.get("own_backbone") or acc.get((r["dataset"], config.get("backbone", r["model"].split("-")[1])))
            base_m, base_g = (base or {}).get("metrics", {}), (base or {}).get("groups", {})
        preset = _preset_of(r)
        over = config.get("overrides") or {}
        extra = {k: v for k, v in over.items() if k not in PRESETS.get(preset, {}) and k not in _BUDGET_KEYS}
        lines.append(
            f"| {r['dataset']} | {r['model']} | {preset} | {config.get('encoder', '–')} | "
            f"{' '.join(f'{k}={v}' for k, v in extra.items()) or '–'} | {len(r['seeds'])} | "
            f"{_pct(_seed_mean(seeds, key), _seed_mean(seeds, f'backbone_{key}'))} | "
            f"{_pct(_seed_mean(seeds, key, cold=True), _seed_mean(seeds, f'backbone_{key}', cold=True))} | "
            f"{_pct(r['metrics'].get('NDCG@10'), base_m.get('NDCG@10'))} | "
            f"{_pct(r['groups'].get('cold', {}).get('NDCG@10'), base_g.get('cold', {}).get('NDCG@10'))} |"
        )
    return lines


def _new_items_markdown(records: list[dict]) -> list[str]:
    """pad.md's new-item section: users whose target was held out of training entirely."""
    rows = [r for r in records if r["task"] == "newitems"]
    if not rows:
        return []
    lines = [
        "\nNew items (protocol full-newitems): a seeded share of the items held out of training entirely (the same "
        "items for every model of a seed), added afterwards from their text; test users whose last item is one of "
        "them, ranked against every item, history masked; mean ± std over seeds. A model that cannot add items "
        "ranks them last.\n",
        "| dataset | model | preset | share | seeds | held-out items | users (per seed) | HR@10 | NDCG@10 |",
        "|---" * 9 + "|",
    ]
    for r in rows:
        m = r["metrics"]
        users = "/".join(map(str, r.get("users", [])))
        lines.append(
            f"| {r['dataset']} | {r['model']} | {_preset_of(r)} | {r['share']:g} | {len(r['seeds'])} | "
            f"{r['held_items']} | {users} | {_pm(m, 'HR@10')} | {_pm(m, 'NDCG@10')} |"
        )
    return lines


if __name__ == "__main__":
    main()
