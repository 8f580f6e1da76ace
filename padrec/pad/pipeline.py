"""PAD end to end: pre-train → embed → align → [text expert] → disentangle, finished stages reused.

A stage is finished when its sub-directory holds ``model.pt`` and ``train.json``; an interrupted stage
resumes from its ``checkpoints/last.ckpt``. The text-expert stage runs only with ``text_init=pretrain``.
The final table compares the backbone, the aligned tower (and the text-only tower) and PAD under one
protocol, overall and per popularity bin.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from padrec.data.split import Split, Stage
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.eval.results import Results
from padrec.models.base import Recommender, get_model_class
from padrec.models.sequential import SequentialRecommender
from padrec.pad.recommender import PAD, PADAligned, PADText
from padrec.train.config import ConfigError, resolve
from padrec.utils import atomic_path, atomic_write_text

log = logging.getLogger(__name__)
STAGES = ("pretrain", "embed", "align", "text-expert", "pad")


def stage_done(path: Path) -> bool:
    return (path / "model.pt").exists() and (path / "train.json").exists()


@dataclass
class PADRun:
    """Paths and models of one pipeline run."""

    run_dir: Path
    backbone: Recommender | None = None
    aligned: PADAligned | None = None
    text_expert: PADText | None = None
    pad: PAD | None = None
    text: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    results: dict[str, Results] = field(default_factory=dict)


#: Named PAD configurations (``padrec pad --preset NAME``, ``padrec.PAD(preset=NAME)``); explicit keys win.
PRESETS: dict[str, dict[str, Any]] = {
    # the paper's design: fresh text expert, all three experts fine-tuned in stage 3
    "paper": {},
    # padrec's cold-item variant: training-free title similarity to the last item as the third expert, the
    # pre-trained experts frozen (only gates and the similarity scale learn); see README, Results
    "simfrozen": {"experts": ["collab", "aligned", "similarity"], "freeze": ["collab", "aligned"]},
    # simfrozen, then each gate bin's share of the mixture calibrated on half of the validation users so that
    # cold items do not lose to the backbone there (padrec.pad.calibrate)
    "simcal": {"experts": ["collab", "aligned", "similarity"], "freeze": ["collab", "aligned"], "calibrate": True},
    # simcal for cold items: calibration may give up 5% of the best overall NDCG@10 on its validation users for
    # them, moving every bin's share at once up to the similarity expert alone (padrec.pad.calibrate.search_budget)
    "simcold": {
        "experts": ["collab", "aligned", "similarity"],
        "freeze": ["collab", "aligned"],
        "calibrate": True,
        "calibrate_budget": 0.05,
    },
    # fidelity presets: the paper's design with one setting of its official code each (bench/bench_pad.py's study;
    # the text encoder is the other switch: --encoder smollm2 / gemma3-270m). Keys given explicitly still win, so
    # leave backbone.* keys off the command line with the first two.
    # BCE with one uniform negative in every stage (backbone, align, stage 3) instead of CE over all items
    "paper-bce": {"backbone.loss": "bce", "loss": "bce"},
    # the official SASRec sizes: d=128, 5 blocks, 2 heads, max length 20, dropout 0.1
    "paper-official": {
        "backbone.d": 128,
        "backbone.n_layers": 5,
        "backbone.n_heads": 2,
        "backbone.max_len": 20,
        "backbone.dropout": 0.1,
    },
    # the official code's 11 popularity bins (gates per bin) instead of 10
    "paper-bins11": {"n_bins": 11},
}


#: what ``padrec pad`` and ``padrec.PAD`` run without ``--preset``: the preset chosen on validation users by
#: ``bench/bench_pad.py --choose-default`` (see README, PAD); ``--preset paper`` is the published design
DEFAULT_PRESET = "simcal"


def with_preset(preset: str | None, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``overrides`` on top of the named preset's keys (``None``: :data:`DEFAULT_PRESET`)."""
    preset = DEFAULT_PRESET if preset is None else preset
    if preset not in PRESETS:
        raise ValueError(f"unknown PAD preset {preset!r}: known presets are {', '.join(PRESETS)}")
    return {**PRESETS[preset], **(overrides or {})}


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``backbone.*`` keys go to the backbone (and its training), everything else to PAD's stages."""
    bb = {k.removeprefix("backbone."): v for k, v in overrides.items() if k.startswith("backbone.")}
    pad = {k: v for k, v in overrides.items() if not k.startswith("backbone.")}
    return bb, pad


def _pad_configs(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from pydantic import ValidationError

    from padrec.pad.recommender import PADConfig
    from padrec.train.config import ConfigError, TrainConfig, validation_message

    params: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for key, value in overrides.items():
        sec, _, name = key.rpartition(".")
        name = name or key
        if sec in ("", "pad") and name in PADConfig.model_fields:
            params[name] = value
        elif sec in ("", "train") and name in TrainConfig.model_fields:
            train[name] = value
        else:
            raise ConfigError(
                f"unknown PAD config key {key!r}; PAD keys: {', '.join(PADConfig.model_fields)}; "
                f"train keys: {', '.join(TrainConfig.model_fields)}; backbone keys take a 'backbone.' prefix"
            )
    try:  # bad values fail here, before any stage trains
        PADConfig(**params)
        TrainConfig(**train)
    except ValidationError as e:
        raise ConfigError(f"invalid PAD config: {validation_message(e)}") from None
    return params, train


#: the calibration step's settings (padrec.pad.calibrate)
CALIBRATE_KEYS = frozenset({"calibrate", "calibrate_budget"})
#: settings that do not change a finished stage: progress bars, and calibration (a step after stage 3)
_REUSABLE_KEYS = frozenset({"progress", "backbone.progress"}) | CALIBRATE_KEYS


def _calibrated_as(path: Path, budget: float) -> bool:
    """Whether ``path`` (calibration.json) holds a calibration made with this cold budget (calibrating is cheap next
    to stage 3, so one made with another budget is redone rather than refused)."""
    if not path.is_file():
        return False
    try:
        return float(json.loads(path.read_text()).get("budget", 0.0)) == budget
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def check_run_settings(run_dir: Path, backbone: str, overrides: dict[str, Any] | None) -> None:
    """Refuse a run directory whose finished stage 3 was made with other settings: it would be reused as it is (a
    run made before the default preset changed would otherwise pass for the new default). Without a finished
    stage 3 the earlier stages are reused on purpose (a run dir copied to try another stage 3 on them)."""
    path = Path(run_dir) / "pad.json"
    if not path.is_file() or not stage_done(Path(run_dir) / "pad"):
        return
    if (Path(run_dir) / "pad" / "calibration.json").is_file() and not (overrides or {}).get("calibrate"):
        raise ConfigError(
            f"{run_dir} holds a PAD run whose gates were calibrated (pad/calibration.json) but this call has "
            "calibrate off: its stage 3 would be reused calibrated; choose another run directory"
        )
    try:
        had = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # unreadable: rewritten at the end of this run, stages are checked one by one as before

    def norm(o: Any) -> dict[str, Any]:
        o = json.loads(json.dumps(o or {}, default=str))
        return {k: v for k, v in o.items() if k not in _REUSABLE_KEYS}

    want = norm(overrides)
    if had.get("backbone", backbone) != backbone or norm(had.get("overrides")) != want:
        raise ConfigError(
            f"{run_dir} holds a PAD run made with other settings (backbone {had.get('backbone')}, "
            f"{norm(had.get('overrides'))}; this call: backbone {backbone}, {want}): its finished stages would be "
            "reused as they are; choose another run directory or remove this one"
        )


def check_overrides(split: Split, backbone: str = "sasrec", overrides: dict[str, Any] | None = None) -> None:
    """Raise ConfigError for an unknown backbone or a bad PAD or backbone override, before anything is written."""
    bb_over, pad_over = _split_overrides(overrides or {})
    _pad_configs(pad_over)
    cls = get_model_class(backbone)
    if not issubclass(cls, SequentialRecommender):
        raise ConfigError(f"backbone {backbone!r}: expected a sequential model (sasrec, gru4rec, bert4rec, caser)")
    try:
        resolve(backbone, cls.config_cls, split.dataset.name, bb_over)
    except ConfigError as e:  # the user typed backbone.KEY: say so
        raise ConfigError(f"backbone.* overrides: {e}") from None


def run_pad(
    split: Split,
    run_dir: str | Path,
    backbone: str = "sasrec",
    encoder: str = "minilm",
    overrides: dict[str, Any] | None = None,
    text: np.ndarray | None = None,
    evaluate: bool = True,
) -> PADRun:
    """Run (or finish) every PAD stage in ``run_dir`` and evaluate backbone, aligned tower and PAD."""
    run_dir = Path(run_dir)
    check_overrides(split, backbone, overrides)
    check_run_settings(run_dir, backbone, overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    bb_over, pad_over = _split_overrides(overrides or {})
    params, train = _pad_configs(pad_over)
    out = PADRun(run_dir)

    # Stage 1a: collaborative backbone
    cls = get_model_class(backbone)
    pre = run_dir / "pretrain"
    if stage_done(pre):
        out.backbone = Recommender.load(pre)
        out.skipped.append("pretrain")
    else:
        bparams, btrain = resolve(backbone, cls.config_cls, split.dataset.name, bb_over)
        out.backbone = cls(params=bparams.model_dump(), train=btrain.model_dump())
        out.backbone.fit(split, run_dir=pre, resume=(pre / "checkpoints" / "last.ckpt").exists())

    # Stage 1b: text table
    text_path = run_dir / "text.npy"
    if text is not None:
        out.text = np.asarray(text, dtype=np.float32)
    elif text_path.exists():
        out.text = np.load(text_path)
        out.skipped.append("embed")
    else:
        from padrec.text import embed_items

        out.text = embed_items(split.dataset, encoder=encoder).vectors
    with atomic_path(text_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, out.text)

    # Stage 2: align
    _, btrain = resolve(backbone, cls.config_cls, split.dataset.name, bb_over)
    stage_train = {**btrain.model_dump(), **train}
    al = run_dir / "align"
    if stage_done(al):
        out.aligned = Recommender.load(al)
        out.skipped.append("align")
    elif "aligned" in params.get("experts", ("aligned",)):
        out.aligned = PADAligned(params=params, train=stage_train, backbone=backbone, encoder=encoder)
        out.aligned.fit(split, out.backbone, out.text, run_dir=al, resume=(al / "checkpoints" / "last.ckpt").exists())

    # Optional: the text-only expert trained alone before the mixture
    te = run_dir / "text-expert"
    if stage_done(te):
        out.text_expert = Recommender.load(te)
        out.skipped.append("text-expert")
    elif params.get("text_init") == "pretrain" and "text" in params.get("experts", ("text",)):
        out.text_expert = PADText(params=params, train=stage_train, backbone=backbone, encoder=encoder)
        out.text_expert.fit(
            split, out.backbone, out.text, run_dir=te, resume=(te / "checkpoints" / "last.ckpt").exists()
        )

    # Stage 3: disentangle
    pd_dir = run_dir / "pad"
    if stage_done(pd_dir):
        out.pad = Recommender.load(pd_dir)
        out.skipped.append("pad")
    else:
        out.pad = PAD(params=params, train=stage_train, backbone=backbone, encoder=encoder)
        out.pad.fit(
            split,
            out.backbone,
            out.text,
            out.aligned,
            run_dir=pd_dir,
            resume=(pd_dir / "checkpoints" / "last.ckpt").exists(),
            text_expert=out.text_expert,
        )
    # After stage 3 (optional): calibrate the gates' mixture share per bin on validation users
    cal = pd_dir / "calibration.json"
    budget = float(params.get("calibrate_budget", 0.0))
    if params.get("calibrate") and not _calibrated_as(cal, budget):
        from padrec.pad.calibrate import calibrate

        log.info("calibrating the gates on validation users")
        found = calibrate(out.pad, split, seed=stage_train.get("seed", 0), budget=budget)
        done = {"calibrate": True, "calibrate_budget": budget}
        out.pad.params = out.pad.params.model_copy(update=done)  # a copied stage 3 had it off
        out.pad.config["params"].update(done)
        out.pad.save(pd_dir)
        atomic_write_text(cal, json.dumps(found, indent=2))
    elif cal.exists():
        out.skipped.append("calibrate")
    atomic_write_text(
        run_dir / "pad.json",
        json.dumps(
            {
                "backbone": backbone,
                "encoder": encoder,
                "dataset": split.dataset.name,
                "overrides": overrides or {},
                "skipped": out.skipped,
            },
            indent=2,
            default=str,
        ),
    )

    if out.aligned is not None:
        conc = alignment_concordance(out, split)
        atomic_write_text(run_dir / "concordance.json", json.dumps(conc, indent=2))
        if importlib.util.find_spec("matplotlib") is not None:
            from padrec.eval.plots import plot_concordance

            title = f"{split.dataset.name}: id-space vs text-space neighbours, before/after alignment"
            plot_concordance(conc["curve"], run_dir / "concordance.png", title=title)

    if evaluate:
        out.results = evaluate_stages(out, split)
        atomic_write_text(
            run_dir / "results.json", json.dumps({k: r.to_dict() for k, r in out.results.items()}, indent=2)
        )
        if importlib.util.find_spec("matplotlib") is not None:
            plot_bins(out.results, run_dir / "bins.png")
        else:
            log.info("matplotlib not installed (pip install 'padrec[plot]'): no bins.png")
    return out


def evaluate_stages(out: PADRun, split: Split, stage: Stage = "test") -> dict[str, Results]:
    """Results of every model of a run on ``stage``'s users (``"test"``, or ``"valid"``: the validation item
    early stopping watched, same full ranking with the history masked), labelled as in the table: backbone,
    aligned, text-only, pad-BACKBONE."""
    ev = Evaluator(split, Protocol())
    backbone = out.backbone.name
    results = {}
    for label, model in (
        (backbone, out.backbone),
        ("aligned", out.aligned),
        ("text-only", out.text_expert),
        (f"pad-{backbone}", out.pad),
    ):
        if model is not None:
            results[label] = ev.run(model, stage=stage)
            results[label].model = label
    return results


def _report_groups(res: Results) -> list[str]:
    """Rows of PAD's report: overall, cold, warm, then every popularity bin (and unseen) in order."""
    return ["overall", "cold", "warm", *[g for g in res.groups if g.startswith("bin") or g == "unseen"]]


def plot_bins(
    results: dict[str, Results],
    path: str | Path,
    metric: str = "NDCG@10",
    baseline: str | None = None,
    keep: tuple[str, ...] = (),
    max_series: int = 6,
) -> Path:
    """Bar chart of ``metric`` per popularity bin (+ overall, cold, warm), one bar per model, and each model's
    change against ``baseline`` (default: the first model, the backbone) in percent below it."""
    from padrec.eval.plots import plot_groups

    first = next(iter(results.values()))
    groups = _report_groups(first)
    series = {name: {g: r.group(g).get(metric, float("nan")) for g in groups} for name, r in results.items()}
    title = f"{first.dataset}: {metric} per item-popularity bin (bin1 = most popular), {first.protocol}"
    return plot_groups(
        series, path, groups=groups, ylabel=metric, title=title, baseline=baseline, keep=keep, max_series=max_series
    )


def alignment_concordance(
    out: PADRun, split: Split, k: int = 10, ks: tuple[int, ...] = (1, 5, 10, 20, 50)
) -> dict[str, Any]:
    """PAD's analysis: do items close in the id space stay close in the text space, before vs after alignment?

    Before: the pre-trained id table vs the raw text vectors. After: the aligned tower's id table vs its
    adapted text vectors g(t). Same items (seen in training), same sample, same seed. ``curve`` holds the
    neighbourhood overlap@k for every k in ``ks`` (and what random neighbours would give, k / (n - 1)).
    """
    import torch

    from padrec.text import concordance

    seen = np.flatnonzero(split.train_item_counts[1:] > 0) + 1
    with torch.inference_mode():
        ids_before = out.backbone.net.item_vectors().numpy()[seen]
        ids_after = out.aligned.net.items.all().numpy()[seen]
    text_after = out.aligned.text_space()[seen]
    before = concordance(ids_before, out.text[seen], k=k)
    after = concordance(ids_after, text_after, k=k)
    ks = tuple(x for x in ks if 1 <= x < len(seen))
    curve = {
        "k": list(ks),
        "before": [before["overlap_at_k"] if x == k else concordance(ids_before, out.text[seen], k=x)["overlap_at_k"]
                   for x in ks],
        "after": [after["overlap_at_k"] if x == k else concordance(ids_after, text_after, k=x)["overlap_at_k"]
                  for x in ks],
        "random": [x / (len(seen) - 1) for x in ks],
    }  # fmt: skip
    return {"items": len(seen), "k": k, "before": before, "after": after, "curve": curve}


def new_item_text(ns: Any, encoder: str = "minilm") -> tuple[np.ndarray, np.ndarray]:
    """Text vectors for the new-item protocol from one embedding of ``ns.full``'s whole catalogue: every row of
    ``ns.full`` (the held-out items' rows are added afterwards), and the rows of ``ns.train``'s items in its own
    id order (the table a run on ``ns.train`` trains with)."""
    from padrec.text import embed_items

    full = embed_items(ns.full, encoder=encoder).vectors
    rows = np.concatenate([[0], ns.full.to_internal(ns.train.dataset.item_ids[1:])])
    return full, full[rows]


def new_item_results(
    out: PADRun, ns: Any, encoder: str = "minilm", text: np.ndarray | None = None
) -> dict[str, Results]:
    """The new-item protocol (:mod:`padrec.eval.newitems`) for a run trained on ``ns.train``: the backbone (which
    cannot score items it never saw) and PAD after adding every held-out item from its text vector alone.

    ``text``: vectors of ``ns.full``'s items (default: embedded with ``encoder``, cached like every text table)."""
    import copy

    from padrec.eval.newitems import evaluate_new_items

    if text is None:
        from padrec.text import embed_items

        text = embed_items(ns.full, encoder=encoder).vectors
    rows = ns.held_internal()
    pad = copy.deepcopy(out.pad)  # the run's model stays as trained
    pad.add_item_vectors(ns.held, np.asarray(text, dtype=np.float32)[rows], ns.full.titles_of(rows))
    backbone = out.backbone.name
    return {
        backbone: evaluate_new_items(out.backbone, ns, backbone),
        f"pad-{backbone}": evaluate_new_items(pad, ns, f"pad-{backbone}"),
    }


def new_item_table(results: dict[str, Results], share: float) -> str:
    """A few lines: users whose target is a held-out item, and each model's HR@10 / NDCG@10 on them."""
    first = next(iter(results.values()))
    lines = [
        f"new items ({first.protocol}): {100 * share:g}% of the items held out of training, added afterwards from "
        f"text; {first.n_users} test users whose target is one of them",
        f"{'model':>16s}  {'HR@10':>8s}  {'NDCG@10':>8s}",
    ]
    for name, r in results.items():
        note = "" if r.groups.get("scorable", {}).get("users") else "  (cannot score new items)"
        lines.append(f"{name:>16s}  {r.overall['HR@10']:8.4f}  {r.overall['NDCG@10']:8.4f}{note}")
    return "\n".join(lines)


def comparison_table(results: dict[str, Results], metrics: tuple[str, ...] = ("HR@10", "NDCG@10")) -> str:
    """One table: rows = overall, cold, warm, bin1..bin10 (+unseen) and freq0..freq>200; columns = model × metric."""
    names = list(results)
    first = next(iter(results.values()))
    from padrec.data.split import COUNT_GROUPS

    # relative popularity bins, then the target's absolute training count (cold means cold on every dataset)
    rows = [*_report_groups(first), *[g for g in COUNT_GROUPS if g in first.groups]]
    head = ["group", "users", *[f"{n} {m}" for n in names for m in metrics]]
    widths = [max(8, len(h)) for h in head]
    widths[0] = max(widths[0], *(len(g) for g in rows))
    lines = [
        f"protocol {first.protocol}, dataset {first.dataset}, stage {first.stage}",
        "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
    ]
    for g in rows:
        cells = [g]
        src = {n: r.group(g) for n, r in results.items()}
        users = first.n_users if g == "overall" else int(first.groups.get(g, {}).get("users", 0))
        cells.append(str(users))
        for n in names:
            for m in metrics:
                v = src[n].get(m)
                cells.append("-" if v is None else f"{v:.4f}")
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    if len(names) >= 2:
        base, last = results[names[0]], results[names[-1]]
        for g in ("overall", "cold"):
            a, b = base.group(g), last.group(g)
            if a.get("NDCG@10"):
                lines.append(
                    f"{names[-1]} vs {names[0]} NDCG@10 on {g}: {100 * (b['NDCG@10'] / a['NDCG@10'] - 1):+.1f}%"
                )
    return "\n".join(lines)
