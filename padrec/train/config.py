"""Typed run configuration: YAML defaults per model and dataset, ``key=value`` overrides.

Unknown keys are errors (a typo must never silently train the default model). Unqualified
override keys (``lr=0.002``) resolve to whichever section owns them; ``model.d=128`` and
``train.lr=0.002`` are explicit.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(Strict):
    loss: Literal["ce", "bce", "bpr", "sampled_softmax"] = "ce"  # BPR-MF and NCF default to "bpr"
    n_negatives: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0.0)
    # "plateau": multiply the learning rate by lr_factor after lr_patience validations without a better
    # validation NDCG@10 (set lr_patience below patience, or early stopping ends the run first)
    lr_schedule: Literal["constant", "plateau"] = "constant"
    lr_factor: float = Field(default=0.3, gt=0.0, lt=1.0)
    lr_patience: int = Field(default=3, ge=0)
    min_lr: float = Field(default=1e-5, ge=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=128, ge=1)
    max_epochs: int = Field(default=200, ge=1)  # Lightning reads -1 as 'forever'
    patience: int = Field(default=10, ge=1)  # validations (not epochs) without a better validation NDCG@10
    val_every: int = Field(default=1, ge=1)  # validate every k epochs (and after the last): for costly scoring
    # validate on a seeded sample of this many users (model selection only; the test always ranks every user)
    val_users: int | None = Field(default=None, ge=1)
    # sequential models: batch users of similar history length (every batch is cropped to its longest history
    # anyway); same examples per epoch, far less padding on short-history data, but validation NDCG@10 lagged
    # ~1 epoch behind random batches on amazon-beauty (bench/results/batching.md), so it is opt-in
    length_buckets: bool = False
    seed: int = 42
    eval_batch_size: int = Field(default=1024, ge=1)
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"  # "bf16-mixed" on recent GPUs (and CPUs with AVX512-BF16)
    limit_train_batches: float = Field(default=1.0, gt=0.0)
    progress: bool = True
    # experiment loggers: None = csv + tensorboard when installed; the CSV log is always written (run reports
    # and best_epoch read it); "mlflow" needs `pip install 'padrec[mlflow]'`
    logger: list[Literal["csv", "tensorboard", "mlflow"]] | None = None
    # None: MLflow's own default ($MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory)
    mlflow_uri: str | None = None
    mlflow_experiment: str | None = None  # None: the dataset name

    @field_validator("logger", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        """``logger=mlflow`` and ``logger=csv,mlflow`` on the command line mean a list."""
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v


class ConfigError(ValueError):
    pass


def validation_message(e: ValidationError, prefix: str = "") -> str:
    """pydantic's multi-line report as one line: ``lr: Input should be a valid number, got 'abc'; ...``."""
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if not loc:  # a check across fields: its message says what it saw
            parts.append(msg)
            continue
        got = f", got {err['input']!r}" if err.get("type") != "missing" and "input" in err else ""
        parts.append(f"{prefix}{loc}: {msg}{got}")
    more = f" (+{e.error_count() - 5} more)" if e.error_count() > 5 else ""
    return "; ".join(parts) + more


def _load_yaml(*parts: str) -> dict[str, Any]:
    path = resources.files("padrec").joinpath("configs", *parts)
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "model.d=128"]`` -> ``{"lr": 0.01, "model.d": 128}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def resolve(
    model: str, model_cls: type[Strict], dataset: str | None, overrides: dict[str, Any] | None = None
) -> tuple[Strict, TrainConfig]:
    """Model and training config from: class defaults < model YAML < dataset YAML < overrides."""
    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    base = _load_yaml(f"{model}.yaml")
    for sec in sections:
        sections[sec].update(base.get(sec) or {})
    if dataset:
        ds = _load_yaml("datasets", f"{dataset}.yaml")
        for scope in ("all", model):
            for sec, values in (ds.get(scope) or {}).items():
                fields = (model_cls if sec == "model" else TrainConfig).model_fields
                sections[sec].update({k: v for k, v in (values or {}).items() if k in fields})
    owners = {"model": model_cls.model_fields, "train": TrainConfig.model_fields}
    for key, value in (overrides or {}).items():
        sec, _, name = key.rpartition(".")
        if not sec:
            hits = [s for s, f in owners.items() if key in f]
            if not hits:
                raise ConfigError(
                    f"unknown config key {key!r} for model {model!r}; model keys: "
                    f"{', '.join(owners['model'])}; train keys: {', '.join(owners['train'])}"
                )
            sec, name = hits[0], key
        if sec not in owners or name not in owners[sec]:
            raise ConfigError(f"unknown config key {key!r}; sections are 'model' and 'train'")
        sections[sec][name] = value
    try:
        params = model_cls(**sections["model"])
    except ValidationError as e:
        raise ConfigError(f"invalid config for {model!r}: {validation_message(e, 'model.')}") from None
    try:
        return params, TrainConfig(**sections["train"])
    except ValidationError as e:
        raise ConfigError(f"invalid config for {model!r}: {validation_message(e)}") from None
