"""PALR's options, as one validated value: ``padrec/configs/palr.yaml`` < per-dataset section < overrides.

Every choice the paper leaves open is a field here (and a line in ``padrec/palr/README.md``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from padrec.train.config import ConfigError, Strict, validation_message

Task = Literal["recommend", "recommend_retrieval"]


class PALRConfig(Strict):
    # -- prompts -------------------------------------------------------------------------
    item_format: Literal["auto", "title", "title_year", "id_title"] = "auto"
    max_history: int = Field(default=20, ge=1)
    n_recommend: int = Field(default=10, ge=1)
    # -- profile -------------------------------------------------------------------------
    profile: Literal["rule", "lm", "none"] = "rule"
    profile_keywords: int = Field(default=5, ge=1)
    profile_items_per_keyword: int = Field(default=3, ge=1)
    profile_max_new_tokens: int = Field(default=96, ge=8)
    profile_batch_size: int = Field(default=4, ge=1)
    # -- retrieval -----------------------------------------------------------------------
    retriever: str = "sasrec"  # a run dir, or an untrained model name (pop, random)
    n_candidates: int = Field(default=50, ge=1)
    candidate_order: Literal["retriever", "shuffled"] = "retriever"
    upper_bound: bool = False  # force the target into the candidates (an upper bound, never the headline)
    # -- instruction data ------------------------------------------------------------------
    tasks: tuple[Task, ...] = ("recommend", "recommend_retrieval")  # both = PALR v2, ("recommend",) = v1
    user_fraction: float = Field(default=0.2, gt=0, le=1)
    min_input: int = Field(default=3, ge=1)
    label_len: int = Field(default=10, ge=1)
    fill_hops: int = Field(default=3, ge=0)  # 0 = never fill short targets
    cooc_window: int = Field(default=3, ge=1)
    cooc_top: int = Field(default=20, ge=1)
    swap_prob: float = Field(default=0.1, ge=0, le=1)
    train_candidates: int = Field(default=20, ge=2)
    # where the ranking task's negatives come from: co-occurrence neighbours of the input + random items (easy: the
    # model learns to tell a plausible item from a random one), or `retriever`: cfg.retriever's top items for the
    # training prefix, as at inference (hard negatives, LlamaRec-style; the instruction data then depends on it)
    train_negatives: Literal["cooccurrence", "retriever"] = "cooccurrence"
    # how those retriever candidates are listed: `shuffled` (the model must judge the titles alone) or `retriever`
    # (in the retriever's order, as the ranker lists them at inference with candidate_order=retriever, so the LM can
    # learn to correct that order rather than replace it; padrec's, after LlamaRec). With `retriever`, a user whose
    # next item is not among the retriever's top train_candidates gives no ranking example: the position of an item
    # the retriever did not offer says nothing the ranker will meet (at inference such a user cannot be helped).
    train_order: Literal["shuffled", "retriever"] = "shuffled"
    seed: int = 0
    # -- fine-tuning ------------------------------------------------------------------------
    lm: str = "smollm2"
    method: Literal["lora", "full"] = "lora"
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # None = adapters in every decoder layer. N = only in the top N: the backward pass stops there (the frozen
    # layers below record no graph), ~2x faster steps on CPU for N = a quarter of the layers (a deviation: PALR
    # tunes the whole model)
    lora_layers: int | None = Field(default=None, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_epochs: int = Field(default=1, ge=1)
    max_steps: int = -1
    max_seq_len: int = Field(default=2048, ge=16)
    checkpoint_every: int = Field(default=50, ge=1)
    precision: str = "32-true"
    accelerator: str = "auto"
    progress: bool = True
    # -- model selection on validation users (fine-tuning) ----------------------------------------
    # 0 = off (the last step's weights are kept). N = every N optimiser steps (and once at the end) rank a fixed
    # sample of VALIDATION users with `mode`, keep the adapter with the best NDCG@10 (finetune/best/) and stop after
    # `select_patience` evaluations without improvement. Off by default: each evaluation is an LM ranking pass
    # (seconds with verbalizer, minutes with likelihood/generation on CPU), so it is opt-in where it pays.
    select_every: int = Field(default=0, ge=0)
    # 100 users (half the default test sample): NDCG@10 on 100 users has a standard error of ~0.02-0.03, enough to
    # see a model learn or degrade while an evaluation stays cheap next to the training it watches. None = every one.
    select_users: int | None = Field(default=100, ge=1)
    # 3 evaluations without a strictly better score: one unlucky sample does not end training, a plateau does
    select_patience: int = Field(default=3, ge=1)
    # -- ranking ----------------------------------------------------------------------------
    # verbalizer: candidates listed with one-token labels, one forward pass scores them all (LlamaRec-style)
    mode: Literal["likelihood", "generation", "verbalizer"] = "likelihood"
    verbalizer_batch: int = Field(default=8, ge=1)  # users per forward pass in verbalizer mode
    # the ranking LM's weights: bfloat16 is ~2.5x faster on CPUs with avx512_bf16 (and on GPUs), scores differ
    # slightly (label log-probs by ~0.1 on SmolLM2); part of the ranking cache key. Fine-tuning uses `precision`.
    lm_dtype: Literal["float32", "bfloat16"] = "float32"
    length_norm: Literal["mean", "sum"] = "mean"
    candidate_batch: int = Field(default=64, ge=1)
    gen_batch_size: int = Field(default=4, ge=1)
    gen_max_new_tokens: int = Field(default=192, ge=8)
    fuzzy_threshold: float = Field(default=0.85, gt=0, le=1)
    max_users: int | None = Field(default=200, ge=1)  # None = every user (slow with a real LM on CPU)
    users_seed: int = 0
    stage: Literal["valid", "test"] = "test"
    # -- fusion with the retriever (padrec/palr/fusion.py) -------------------------------------------
    # an extra row `<label>-fusion`: per user w * z(LM score) + (1 - w) * z(retriever score) over the candidates, w
    # from {0, 0.1, ..., 1} by NDCG@10 on a seeded sample of `fusion_users` VALIDATION users (ranked once more by
    # the LM, cached), then applied to the test users' stored scores (no LM call repeated). Off by default: the
    # validation ranking costs LM time. Needs per-candidate scores (likelihood or verbalizer) and stage=test.
    fusion: bool = False
    fusion_users: int | None = Field(default=100, ge=1)  # None = every validation user

    @model_validator(mode="after")
    def _verbalizer_labels(self) -> PALRConfig:
        from padrec.palr.prompts import LABELS

        if self.mode == "verbalizer":
            for key in ("n_candidates", "train_candidates"):
                if getattr(self, key) > len(LABELS):
                    raise ValueError(
                        f"mode=verbalizer labels at most {len(LABELS)} candidates ([A]..[z]), "
                        f"got {key}={getattr(self, key)}"
                    )
        if self.train_order == "retriever" and (self.train_negatives != "retriever" or self.mode != "verbalizer"):
            raise ValueError(
                "train_order=retriever lists the retriever's candidates in its order with one labelled answer: it "
                f"needs train_negatives=retriever and mode=verbalizer (got {self.train_negatives}, {self.mode})"
            )
        if self.fusion and self.mode == "generation":
            raise ValueError(
                "fusion=true needs a score per candidate: use mode=likelihood or mode=verbalizer (generation only "
                "orders the titles it writes)"
            )
        if self.fusion and self.stage != "test":
            raise ValueError(
                "fusion=true chooses its weight on validation users, so it is evaluated with stage=test only"
            )
        return self


def load_palr_config(dataset: str | None = None, overrides: dict[str, Any] | None = None) -> PALRConfig:
    """Defaults from ``configs/palr.yaml`` (its ``all`` section, then ``datasets.<dataset>``), then overrides."""
    path = resources.files("padrec").joinpath("configs", "palr.yaml")
    raw = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    values: dict[str, Any] = dict(raw.get("all") or {})
    if dataset:
        values.update((raw.get("datasets") or {}).get(dataset) or {})
    for key, value in (overrides or {}).items():
        name = key.removeprefix("palr.")
        if name not in PALRConfig.model_fields:
            raise ConfigError(f"unknown PALR config key {key!r}; known keys: {', '.join(PALRConfig.model_fields)}")
        values[name] = value
    try:
        return PALRConfig(**values)
    except ValidationError as e:
        raise ConfigError(f"invalid PALR config: {validation_message(e)}") from None
