"""PALR end to end in one run directory, each finished stage reused:

``data/`` (instruction data, done when ``meta.json`` exists) → ``finetune/`` (done when
``finetune.json`` exists; an interrupted run resumes from ``checkpoints/last.ckpt``) → ``eval/``
(one JSON per evaluated label and stage, plus ``<label>-<stage>.ranking-<digest>.jsonl``, the per-user
ranking results a killed evaluation resumes from). ``profiles.jsonl`` caches user profiles across stages.
A stage is only reused when it was made from the same data (dataset, data fingerprint, ranking format)
and with the same options; otherwise the run stops with an error rather than mixing data from different
settings. :func:`check_stages` runs these checks before any work (the CLI calls it first).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from padrec.data.split import Split, Stage
from padrec.eval.evaluator import Evaluator, model_label
from padrec.eval.protocol import Protocol
from padrec.eval.results import Results
from padrec.palr.config import PALRConfig
from padrec.palr.instructions import (
    META_FILE,
    build_instruction_data,
    data_fingerprint,
    example_windows,
    instruction_identity,
    read_examples,
    stale_reason,
    uses_retriever_negatives,
)
from padrec.palr.instructions import sample_training_users as _training_users
from padrec.palr.profile import ProfileStore
from padrec.palr.prompts import PROMPT_VERSION, ItemCatalog
from padrec.palr.rank import PALRRanker, RankingCache
from padrec.palr.retrieval import candidate_recall, load_retriever, sample_users
from padrec.progress import bar
from padrec.train.config import ConfigError
from padrec.utils import atomic_write_text

DATA_FIELDS = (
    "item_format",
    "max_history",
    "n_recommend",
    "profile",
    "profile_keywords",
    "profile_items_per_keyword",
    "tasks",
    "user_fraction",
    "min_input",
    "label_len",
    "fill_hops",
    "cooc_window",
    "cooc_top",
    "swap_prob",
    "train_candidates",
    "seed",
)
FINETUNE_FIELDS = (
    "lm",
    "method",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "lora_layers",
    "lr",
    "weight_decay",
    "batch_size",
    "grad_accum",
    "max_epochs",
    "max_steps",
    "max_seq_len",
)


def _subset(cfg: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: cfg.get(k) for k in keys}


def _check_same(stage: str, path: Path, saved: dict[str, Any], cfg: PALRConfig, keys: tuple[str, ...]) -> None:
    now = _subset(cfg.model_dump(mode="json"), keys)
    was = _subset(saved, keys)
    diff = {k: (was[k], now[k]) for k in keys if json.dumps(was[k]) != json.dumps(now[k])}
    if diff:
        changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{path} was made with other {stage} options ({changes}); use a new run directory")


def profile_store(run_dir: Path | None, catalog: ItemCatalog) -> ProfileStore:
    return ProfileStore(None if run_dir is None else Path(run_dir) / "profiles.jsonl", catalog)


def palr_label(cfg: PALRConfig, finetuned: bool) -> str:
    """``palr-zeroshot`` / ``palr-v1`` (Recommend only) / ``palr-v2`` (both tasks), + ``-generation``, + ``-gt``."""
    base = "palr-zeroshot" if not finetuned else ("palr-v2" if "recommend_retrieval" in cfg.tasks else "palr-v1")
    if cfg.mode in ("generation", "verbalizer"):
        base += f"-{cfg.mode}"
    return base + ("-gt" if cfg.upper_bound else "")


# -- stage 1: instruction data ------------------------------------------------------------------
def check_data_stage(
    split: Split, run_dir: str | Path, cfg: PALRConfig, catalog: ItemCatalog | None = None
) -> dict | None:
    """The ``meta.json`` of ``run_dir/data`` when it exists and fits ``split`` and ``cfg``, ``None`` when there is
    none; a stale set (another dataset, changed data, other templates or ranking format, other options) is a
    :class:`ConfigError` that says how to rebuild it."""
    run_dir = Path(run_dir)
    data_dir = run_dir / "data"
    meta_path = data_dir / META_FILE
    if not meta_path.is_file():
        return None
    rebuild = (
        f"rebuild it: delete {data_dir} (and {run_dir / 'finetune'}, trained on it) and rerun "
        "`padrec palr build-data`, or use a new --run-dir"
    )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise ConfigError(f"instruction data {meta_path} is unreadable ({e}); {rebuild}") from None
    now = instruction_identity(split, catalog or ItemCatalog.from_dataset(split.dataset, cfg.item_format), cfg)
    if meta.get("dataset") == now["dataset"] and meta.get("prompt_version") == now["prompt_version"]:
        _check_same("instruction-data", data_dir, meta.get("config") or {}, cfg, DATA_FIELDS)
    reason = stale_reason(meta, now)
    if reason:
        raise ConfigError(f"instruction data {data_dir} {reason}; {rebuild}")
    return meta


def build_data(split: Split, run_dir: str | Path, cfg: PALRConfig, lm: Any = None) -> tuple[dict, bool]:
    """Instruction data in ``run_dir/data`` (reused when done from the same data and options); returns
    (meta, reused)."""
    run_dir = Path(run_dir)
    data_dir = run_dir / "data"
    catalog = ItemCatalog.from_dataset(split.dataset, cfg.item_format)
    meta = check_data_stage(split, run_dir, cfg, catalog)
    if meta is not None:
        return meta, True
    store = profile_store(run_dir, catalog)
    if cfg.profile == "lm":
        from padrec.palr.lm import generate, load_causal_lm

        lm = lm or load_causal_lm(cfg.lm)
        windows = example_windows(split, cfg, _training_users(split, cfg))
        store.ensure(
            [u for u, _, _ in windows],
            [inp for _, inp, _ in windows],
            generate=lambda ps: generate(lm, ps, cfg.profile_max_new_tokens, cfg.profile_batch_size),
            lm_name=lm.spec,
            k=cfg.profile_keywords,
            items_per_keyword=cfg.profile_items_per_keyword,
            batch_size=cfg.profile_batch_size,
            progress=cfg.progress,
        )
    retriever = None
    if uses_retriever_negatives(cfg):
        retriever = load_retriever(cfg.retriever, split)
    return build_instruction_data(split, catalog, cfg, data_dir, store, retriever), False


# -- stage 2: fine-tuning ----------------------------------------------------------------------
def run_finetune(split: Split, run_dir: str | Path, cfg: PALRConfig, lm: Any = None, resume: bool = True):
    """Fine-tune on ``run_dir/data`` (built first when missing); returns (lm, summary, reused)."""
    from padrec.palr.finetune import finetune, finetuned_path
    from padrec.palr.lm import load_causal_lm

    run_dir = Path(run_dir)
    ft_dir = run_dir / "finetune"
    summary = check_finetune_stage(split, run_dir, cfg)
    if summary is not None:
        return load_causal_lm(str(finetuned_path(ft_dir))), summary, True
    meta, _ = build_data(split, run_dir, cfg, lm)
    examples = read_examples(run_dir / "data")
    lm = lm or load_causal_lm(cfg.lm)
    record = {k: meta.get(k) for k in _DATA_RECORD}
    select = selection_score(split, cfg) if cfg.select_every > 0 else None
    lm, summary = finetune(lm, examples, cfg, ft_dir, resume=resume, record={"data": record}, select=select)
    return lm, summary, False


def selection_score(split: Split, cfg: PALRConfig, retriever: Any = None) -> Any:
    """``score(lm) -> (NDCG@10, users)`` for model selection during fine-tuning: :func:`evaluate_palr` on a seeded
    sample of ``cfg.select_users`` VALIDATION users (drawn once, with ``users_seed``; never test users), ranked
    with ``cfg.mode`` and ``cfg.retriever``'s candidates exactly as at inference, in the weights' own dtype (the
    model under training; ``lm_dtype`` is a cast for the final ranking). Nothing is written."""
    sub = sample_users(split, cfg.select_users, cfg.users_seed, "valid")
    n_users = len(sub.users("valid"))
    if n_users == 0:
        raise ConfigError(f"select_every={cfg.select_every}: {split.dataset.name} has no validation users to select on")
    retriever = retriever if retriever is not None else load_retriever(cfg.retriever, split)
    # max_users=None: the sample above is the whole set; float32 skips the dtype check (the weights are as trained)
    rank_cfg = cfg.model_copy(update={"max_users": None, "lm_dtype": "float32", "progress": False, "fusion": False})

    def score(lm: Any) -> tuple[float, int]:
        ev = evaluate_palr(sub, rank_cfg, lm, "palr-select", retriever=retriever, stage="valid", progress=False)
        return float(ev.results.overall["NDCG@10"]), int(ev.results.n_users)

    return score


_DATA_RECORD = ("dataset", "n_items", "data_fingerprint", "retrieval_format")


def check_finetune_data(split: Split, run_dir: Path, cfg: PALRConfig, summary: dict) -> None:
    """A finished fine-tuning is only reused with the instruction data it was trained on (when it recorded it)."""
    was = summary.get("data")
    meta = check_data_stage(split, run_dir, cfg)
    if not was or meta is None:
        return
    diff = [k for k in _DATA_RECORD if was.get(k) != meta.get(k)]
    if diff:
        ft_dir = run_dir / "finetune"
        changes = ", ".join(f"{k}: {was.get(k)!r} -> {meta.get(k)!r}" for k in diff)
        raise ConfigError(
            f"{ft_dir} was trained on other instruction data than {run_dir / 'data'} ({changes}); "
            f"delete {ft_dir} to fine-tune again, or use a new --run-dir"
        )


def check_stages(split: Split, run_dir: str | Path, cfg: PALRConfig, finetune: bool = True) -> None:
    """Refuse, before any work, finished stages of ``run_dir`` that would be reused but do not fit: stale
    instruction data (:func:`check_data_stage`) and, with ``finetune``, a fine-tuning made with other options or
    on other instruction data."""
    check_data_stage(split, run_dir, cfg)
    if finetune:
        check_finetune_stage(split, run_dir, cfg)


def check_finetune_stage(split: Split, run_dir: str | Path, cfg: PALRConfig) -> dict | None:
    """The summary of ``run_dir``'s finished fine-tuning when it fits ``cfg`` and the instruction data, ``None``
    when there is none; one made with other options or on other data is a :class:`ConfigError`."""
    from padrec.palr.finetune import DONE_FILE

    run_dir = Path(run_dir)
    done = run_dir / "finetune" / DONE_FILE
    if not done.is_file():
        return None
    try:
        summary = json.loads(done.read_text(encoding="utf-8"))
        saved = summary["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{done} is unreadable ({e}); delete {done.parent} to fine-tune again") from None
    _check_same("fine-tuning", done.parent, saved, cfg, FINETUNE_FIELDS)
    was, now = _selection_options(saved), _selection_options(cfg.model_dump(mode="json"))
    if was != now:
        raise ConfigError(
            f"{done.parent} was made with other model-selection options ({was} -> {now}); use a new run directory"
        )
    check_finetune_data(split, run_dir, cfg, summary)
    return summary


def _selection_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The selection options that decide which weights a fine-tuning kept (none when off, as in runs made before
    selection existed)."""
    every = cfg.get("select_every") or 0
    if not every:
        return {"select_every": 0}
    return {k: cfg.get(k) for k in ("select_every", "select_users", "select_patience")}


# -- stage 3: evaluation -----------------------------------------------------------------------
def lm_dtype(lm: Any) -> str | None:
    """``"float32"`` / ``"bfloat16"`` / ...: the dtype of the LM's weights (``None`` for a non-torch stand-in)."""
    model = getattr(lm, "model", None)
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    p = next(iter(params()), None)
    return None if p is None else str(p.dtype).removeprefix("torch.")


def ranking_lm(lm: Any, cfg: PALRConfig) -> Any:
    """``lm`` with its weights cast, in place, to ``cfg.lm_dtype`` for ranking (a no-op when they already are).

    Cast after loading, so a model handed in (fine-tuned, merged) gets the ranking dtype too."""
    want = cfg.lm_dtype
    if lm is not None and lm_dtype(lm) not in (None, want):
        import torch

        lm.model.to(getattr(torch, want))
    return lm


_RECORD_KEEP = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10", "users")


@dataclass
class FusionEvaluation:
    """PALR fused with its retriever (:mod:`padrec.palr.fusion`): the test results with the weight chosen on
    validation users, and the validation NDCG@10 of every weight tried."""

    results: Results
    weight: float
    grid: dict[float, float]  # weight -> validation NDCG@10
    valid_users: int
    valid_reference: dict[str, float]  # validation NDCG@10 of pure PALR and of the retriever, same users
    valid_resumed_users: int
    note: str

    def record(self, device: str = "cpu", seeds: list[int] | None = None) -> dict[str, Any]:
        rec = self.results.record(device=device, seeds=seeds, note=self.note)
        rec["metrics"] = {k: v for k, v in rec["metrics"].items() if k in _RECORD_KEEP}
        rec["metrics"].update({"fusion_weight": self.weight, "valid_NDCG@10": self.grid[self.weight]})
        return rec

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": self.results.to_dict(),
            "weight": self.weight,
            "valid_grid": [{"weight": w, "NDCG@10": v} for w, v in self.grid.items()],
            "valid_users": self.valid_users,
            "valid_reference": self.valid_reference,
            "valid_resumed_users": self.valid_resumed_users,
            "note": self.note,
        }


@dataclass
class PALREvaluation:
    results: Results
    retriever: Results
    recall: dict[str, float]
    palr: dict[str, Any]
    note: str
    examples: list[dict[str, Any]] = field(default_factory=list)
    fusion: FusionEvaluation | None = None  # with cfg.fusion: the fused row
    scores: dict[int, dict[str, list]] = field(default_factory=dict, repr=False)  # PALRRanker.scores, per user

    def records(self, device: str = "cpu", seeds: list[int] | None = None) -> list[dict[str, Any]]:
        """MISSION §5 records: the PALR row (with hallucination/fallback/speed), the retriever's row, and with
        fusion a third row, PALR fused with the retriever."""
        palr = self.results.record(device=device, seeds=seeds, note=self.note)
        palr["metrics"] = {k: v for k, v in palr["metrics"].items() if k in _RECORD_KEEP}
        palr["metrics"].update({k: self.palr[k] for k in ("hallucination_rate", "fallback_share", "users_per_second")})
        retr = self.retriever.record(device=device, seeds=seeds, note=f"PALR's retriever, same users as: {self.note}")
        retr["metrics"] = {k: v for k, v in retr["metrics"].items() if k in _RECORD_KEEP}
        retr["metrics"].update({k: v for k, v in self.recall.items() if k.startswith("Recall@")})
        return [palr, retr] + ([self.fusion.record(device, seeds)] if self.fusion is not None else [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": self.results.to_dict(),
            "palr": self.palr,
            "retriever": self.retriever.to_dict(),
            "retriever_recall": self.recall,
            "note": self.note,
            "examples": self.examples,
            **({"fusion": self.fusion.to_dict()} if self.fusion is not None else {}),
        }

    def table(self) -> str:
        cols = ["HR@10", "NDCG@10"]
        rows = (self.retriever, self.results) + ((self.fusion.results,) if self.fusion is not None else ())
        wide = max(28, *(len(r.model) for r in rows))
        lines = [
            f"PALR on {self.results.dataset} ({self.results.stage}), protocol {self.results.protocol}",
            f"{'model':{wide}s} " + " ".join(f"{c:>8s}" for c in cols),
        ]
        for r in rows:
            lines.append(f"{r.model:{wide}s} " + " ".join(f"{r.overall[c]:8.4f}" for c in cols))
        p = self.palr
        lines += [
            f"retriever {', '.join(f'{k}={v:.4f}' for k, v in self.recall.items() if k.startswith('Recall@'))}",
            f"hallucination_rate={p['hallucination_rate']:.4f} fallback_share={p['fallback_share']:.4f} "
            f"users/s={p['users_per_second']:.3f}",
            f"note: {self.note}",
        ]
        if self.fusion is not None:
            lines.append(f"fusion: {self.fusion.note}")
        return "\n".join(lines)


def evaluate_palr(
    split: Split,
    cfg: PALRConfig,
    lm: Any = None,
    label: str = "palr",
    run_dir: str | Path | None = None,
    retriever: Any = None,
    stage: Stage | None = None,
    progress: bool | None = None,
    fusion: bool | None = None,
) -> PALREvaluation:
    """Full-ranking metrics of PALR on a seeded sample of ``cfg.max_users`` users, next to its retriever's.

    ``fusion`` (default: ``cfg.fusion`` on the test stage) adds ``.fusion``, PALR fused with the retriever
    (:func:`evaluate_fusion`); with ``cfg.fusion`` the per-candidate scores are kept, and cached users ranked
    before scores were stored are ranked again (counted in ``rescored_users``)."""
    stage = stage or cfg.stage
    progress = cfg.progress if progress is None else progress
    fusion = (cfg.fusion and stage == "test") if fusion is None else fusion
    if fusion and lm is None:
        raise ConfigError("fusion=true fuses the LM's candidate scores with the retriever's: it needs a language model")
    have = lm_dtype(lm)
    if cfg.lm_dtype != "float32" and have not in (None, cfg.lm_dtype):
        raise ConfigError(
            f"lm_dtype={cfg.lm_dtype} but the language model passed has {have} weights: "
            "cast it first (padrec.palr.pipeline.ranking_lm(lm, cfg))"
        )
    sub = sample_users(split, cfg.max_users, cfg.users_seed, stage)
    retriever = retriever if retriever is not None else load_retriever(cfg.retriever, split)
    catalog = ItemCatalog.from_dataset(split.dataset, cfg.item_format)
    ranker = PALRRanker(lm, retriever, cfg, catalog, profile_store(Path(run_dir) if run_dir else None, catalog), label)
    ranker.fit(split)
    ranker.need_scores = cfg.fusion or fusion
    if cfg.upper_bound:
        ranker.forced = {int(u): int(t) for u, t in zip(sub.users(stage), sub.targets(stage), strict=True)}
    if run_dir is not None and lm is not None:
        ranker.cache = RankingCache(ranking_cache_path(run_dir, split, cfg, lm, label, stage, catalog))
    n_users = len(sub.users(stage))
    batch = max({"generation": cfg.gen_batch_size, "verbalizer": cfg.verbalizer_batch}.get(cfg.mode, 8), 1)
    with bar(n_users, f"rank ({label})", unit="user", enabled=progress) as pbar:
        ranker.progress = pbar
        try:
            res = Evaluator(sub, Protocol(batch_size=batch)).run(ranker, stage)
        finally:
            ranker.progress = None
    summary = ranker.summary()
    retr_res = Evaluator(sub, Protocol()).run(retriever, stage)
    recall = candidate_recall(retriever, sub, cfg.n_candidates, stage)
    total = len(split.users(stage))
    sampled = n_users < total
    note = (
        f"{n_users} of {total} {stage} users"
        + (
            f" (seeded uniform sample, users_seed={cfg.users_seed}; a CPU-sized sample, not the full benchmark)"
            if sampled
            else ""
        )
        + f"; candidates: {model_label(retriever)} top-{cfg.n_candidates}, history masked"
        + f" (its Recall@{cfg.n_candidates}={recall[f'Recall@{cfg.n_candidates}']:.4f})"
        + f"; ranking: {cfg.mode}"
        + (f" ({cfg.length_norm} log-likelihood)" if cfg.mode == "likelihood" else "")
        + f"; lm: {getattr(lm, 'spec', None) or 'none (retriever order)'}"
        + (f" ({have})" if have not in (None, "float32") else "")
        + f"; profile: {cfg.profile}"
        + f"; prompts {PROMPT_VERSION}"
        + ("; UPPER BOUND: the target is forced into the candidates" if cfg.upper_bound else "")
    )
    out = PALREvaluation(res, retr_res, recall, summary, note, ranker.examples[:2], scores=ranker.scores)
    if fusion:
        out.fusion = evaluate_fusion(split, sub, cfg, lm, label, run_dir, retriever, out, progress)
    if run_dir is not None:
        atomic_write_text(
            Path(run_dir) / "eval" / f"{label}-{stage}.json", json.dumps(out.to_dict(), indent=2, default=_json_default)
        )
    return out


def fusion_label(label: str) -> str:
    """The fused row's label: ``palr-v2`` → ``palr-v2-fusion``."""
    return f"{label}-fusion"


def evaluate_fusion(
    split: Split,
    test_split: Split,
    cfg: PALRConfig,
    lm: Any,
    label: str,
    run_dir: str | Path | None,
    retriever: Any,
    test: PALREvaluation,
    progress: bool = False,
) -> FusionEvaluation:
    """PALR fused with its retriever (:mod:`padrec.palr.fusion`) on ``test``'s users: the weight is the best
    validation NDCG@10 over :data:`~padrec.palr.fusion.GRID` on a seeded sample of ``cfg.fusion_users``
    validation users (ranked by the LM through :func:`evaluate_palr`, cached as ``<label>-valid``), then applied
    to the scores the test ranking stored (``test.scores``): the LM is not called for test users again."""
    from padrec.palr.fusion import GRID, FusionRanker, choose_weight, weight_grid

    missing = [int(u) for u in test_split.users("test") if int(u) not in test.scores]
    if missing:
        raise ConfigError(
            f"fusion: {len(missing)} test users have no per-candidate LM scores (first: user {missing[0]}); "
            "fusion needs mode=likelihood or mode=verbalizer"
        )
    valid_cfg = cfg.model_copy(update={"max_users": cfg.fusion_users})
    valid = evaluate_palr(split, valid_cfg, lm, label, run_dir, retriever, "valid", progress, fusion=False)
    vsplit = sample_users(split, cfg.fusion_users, cfg.users_seed, "valid")
    grid = weight_grid(vsplit, retriever, valid.scores, "valid", GRID)
    weight = choose_weight(grid)
    fused = FusionRanker(retriever, test.scores, weight, fusion_label(label)).fit(split)
    res = Evaluator(test_split, Protocol()).run(fused, "test")
    n_valid = int(valid.results.n_users)
    by_weight = ", ".join(f"{w:g}: {v:.4f}" for w, v in grid.items())
    note = (
        f"{label} fused with its retriever: per user w * z(LM score) + (1 - w) * z(retriever score) over the "
        f"candidates (z = standardised within the user's list; ties: retriever order), w = {weight:g} chosen by "
        f"NDCG@10 on {n_valid} validation users (users_seed={cfg.users_seed}; never test users; ties: larger w); "
        f"valid NDCG@10 by w: {by_weight}; test: {test.note}"
    )
    ref = {"palr": float(valid.results.overall["NDCG@10"]), "retriever": float(valid.retriever.overall["NDCG@10"])}
    return FusionEvaluation(res, weight, grid, n_valid, ref, int(valid.palr["resumed_users"]), note)


#: options that do not change any one user's ranking (which users are drawn is not part of a user's result)
#: (the selection options only decide which weights rank, and the weights' fingerprint is part of the key)
_NOT_RANKING = ("progress", "max_users", "users_seed", "retriever", "accelerator", "checkpoint_every")
_NOT_RANKING += ("select_every", "select_users", "select_patience")
_NOT_RANKING += ("fusion", "fusion_users")  # fusion re-orders stored scores afterwards; the LM's ranking is the same


def ranking_cache_path(
    run_dir: str | Path, split: Split, cfg: PALRConfig, lm: Any, label: str, stage: str, catalog: ItemCatalog
) -> Path:
    """``run_dir/eval/<label>-<stage>.ranking-<digest>.jsonl``: per-user results of this LM (its weights'
    fingerprint), data and ranking options; any change gives another file, so results are never mixed."""
    from padrec.palr.lm import model_fingerprint

    ident = {
        "lm": getattr(lm, "spec", None),
        "weights": model_fingerprint(lm) if hasattr(lm, "model") else type(lm).__name__,
        "data": data_fingerprint(split, catalog),
        "prompt_version": PROMPT_VERSION,
        "config": {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NOT_RANKING},
    }
    # float32 (the default, and all there was before lm_dtype) leaves the digest as it was, so earlier caches resume;
    # any other dtype, asked for or found in the weights, gives its own file
    if ident["config"].get("lm_dtype") == "float32":
        del ident["config"]["lm_dtype"]
    have = lm_dtype(lm)
    if have not in (None, "float32"):
        ident["dtype"] = have
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(run_dir) / "eval" / f"{label}-{stage}.ranking-{digest}.jsonl"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    return str(o)


# -- everything ---------------------------------------------------------------------------------
@dataclass
class PALRRun:
    run_dir: Path
    evaluation: PALREvaluation
    label: str
    skipped: list[str] = field(default_factory=list)
    data: dict | None = None
    finetune: dict | None = None


def run_palr(
    split: Split, run_dir: str | Path, cfg: PALRConfig, zero_shot: bool = False, resume: bool = True
) -> PALRRun:
    """build-data → finetune → evaluate (zero-shot skips the first two), reusing finished stages."""
    from padrec.palr.lm import load_causal_lm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(cfg.model_dump(mode="json"), indent=2))
    t0 = time.perf_counter()
    skipped: list[str] = []
    meta = ft = None
    if zero_shot:
        lm = load_causal_lm(cfg.lm)
    else:
        meta, reused = build_data(split, run_dir, cfg)
        if reused:
            skipped.append("data")
        lm, ft, reused = run_finetune(split, run_dir, cfg, resume=resume)
        if reused:
            skipped.append("finetune")
    label = palr_label(cfg, finetuned=not zero_shot)
    ev = evaluate_palr(split, cfg, ranking_lm(lm, cfg), label, run_dir)
    valid_ranked = ev.fusion is None or ev.fusion.valid_resumed_users == ev.fusion.valid_users
    if ev.palr["users"] and ev.palr["resumed_users"] == ev.palr["users"] and valid_ranked:
        skipped.append("ranking")
    ev.palr["pipeline_seconds"] = round(time.perf_counter() - t0, 3)
    return PALRRun(run_dir, ev, label, skipped, meta, ft)
