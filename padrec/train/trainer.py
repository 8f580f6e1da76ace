"""Lightning glue: batches from training prefixes, validation NDCG@10, checkpoints and resume.

Lightning owns the loop, checkpointing, early stopping, logging, progress bars and DDP; this
module only says what a batch is and what the validation number is.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset, Sampler

from padrec.data.split import Split
from padrec.models.sequential import pad_left
from padrec.utils import atomic_torch_save, atomic_write_text

if TYPE_CHECKING:
    pass

VAL_METRIC = "val_ndcg10"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints appear whole or not at all: a crash mid-save keeps the previous file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


class _Users(Dataset):
    def __init__(self, users: np.ndarray) -> None:
        self.users = users

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> int:
        return int(self.users[i])


class NextItemBatches:
    """Collate user ids into (input, target) pairs: each position predicts the following item.

    ``crop`` drops the columns that are padding in every row. With left padding no model's output at a real
    position depends on them (transformers mask padding keys and align positions to the last item, the GRU packs
    padding away, Caser's window sees zero vectors either way), so a cropped batch has the same loss; only the
    shapes of dropout's random draws change. ``tests/test_defaults.py`` checks this for every model.
    """

    def __init__(self, seqs: list[np.ndarray], max_len: int, crop: bool = False) -> None:
        self.seqs, self.max_len, self.crop = seqs, max_len, crop

    def __call__(self, users: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = [self.seqs[u][-(self.max_len + 1) :] for u in users]
        width = max(1, max(len(c) for c in chunks) - 1) if self.crop else self.max_len
        inp = pad_left([c[:-1] for c in chunks], width)
        tgt = pad_left([c[1:] for c in chunks], width)
        return torch.from_numpy(inp), torch.from_numpy(tgt)


class MaskedItemBatches:
    """BERT4Rec's cloze task: mask random positions (at least one per user) and predict them.

    The mask is drawn at full ``max_len`` width and cropped with the batch, so a cropped batch masks exactly the
    positions the uncropped one does (same seed, same batches: same loss).
    """

    def __init__(
        self, seqs: list[np.ndarray], max_len: int, mask_id: int, mask_prob: float, seed: int, crop: bool = False
    ) -> None:
        self.seqs, self.max_len, self.mask_id, self.p, self.crop = seqs, max_len, mask_id, mask_prob, crop
        self.rng = np.random.default_rng(seed)

    def __call__(self, users: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.seqs[u] for u in users]
        width = min(self.max_len, max(1, max(len(r) for r in rows))) if self.crop else self.max_len
        seq = pad_left(rows, width)
        real = seq > 0
        draws = self.rng.random((len(rows), self.max_len))[:, self.max_len - width :]
        masked = (draws < self.p) & real
        last = width - 1
        none = ~masked.any(1)
        masked[none, last] = real[none, last]
        inp = np.where(masked, self.mask_id, seq)
        tgt = np.where(masked, seq, 0)
        return torch.from_numpy(inp), torch.from_numpy(tgt)


class RecLightning(L.LightningModule):
    """Wraps any trainable recommender exposing ``net`` and ``training_loss(batch)``."""

    def __init__(self, rec: Any, split: Split, times_path: Path | None = None, resumed: bool = False) -> None:
        super().__init__()
        self.rec, self.split = rec, split
        self.net = rec.net
        self.cfg = rec.train_cfg
        self.times_path = times_path
        self.timings: dict[str, list[float]] = {"train": [], "valid": [], "ndcg": []}
        if resumed and times_path is not None and times_path.is_file():  # a resumed run keeps its history
            self.timings = {k: list(v) for k, v in json.loads(times_path.read_text()).items()}

    #: with length buckets, the expected number of target positions per batch (set by ``train``)
    positions_per_batch: float | None = None

    def training_step(self, batch: Any, _: int) -> torch.Tensor:
        loss, n = self.rec.training_loss(batch)
        if self.positions_per_batch:
            # bucketed batches hold very different numbers of targets: weigh every position alike,
            # as a random batch would in expectation, instead of every batch alike
            loss = loss * (n / self.positions_per_batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def on_train_epoch_start(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        t1 = time.perf_counter()
        self.timings["train"].append(t1 - self._t0)
        epoch = self.current_epoch + 1
        if epoch % self.cfg.val_every and epoch < self.trainer.max_epochs:
            # no validation this epoch (val_every): checkpointing and early stopping wait for the next one.
            # Lightning keeps the last logged value in callback_metrics; left there, EarlyStopping would
            # count this epoch as one more validation without improvement.
            self.trainer.callback_metrics.pop(VAL_METRIC, None)
            self.timings["valid"].append(0.0)
            self.timings["ndcg"].append(None)
        else:
            ndcg = self._validate()
            self.timings["valid"].append(time.perf_counter() - t1)
            self.timings["ndcg"].append(ndcg)
            self.log(VAL_METRIC, ndcg, prog_bar=True, sync_dist=False)
            if self.plateau is not None:  # before the checkpoint callbacks save this epoch
                self.plateau.step(ndcg)
        if self.times_path is not None and self.trainer.is_global_zero:  # every epoch: a kill loses nothing
            atomic_write_text(self.times_path, json.dumps(self.timings))

    def _validate(self) -> float:
        """Validation NDCG@10. Under DDP each rank ranks its own share of the validation users and the sums are
        reduced, so every rank gets the single-process number for the cost of one evaluation, not one per rank."""
        world = self.trainer.world_size
        if world < 2:
            return validation_ndcg(self.rec, self.split, self.cfg.eval_batch_size, self.cfg.val_users, self.cfg.seed)
        from padrec.eval.metrics import metrics_from_ranks

        rank = self.trainer.global_rank
        ranks = validation_ranks(self.rec, self.split, self.cfg.eval_batch_size, self.cfg.val_users, self.cfg.seed,
                                 shard=(rank, world))  # fmt: skip
        total_ndcg = metrics_from_ranks(ranks, (10,))["NDCG@10"] * len(ranks) if len(ranks) else 0.0  # mean x users
        local = torch.tensor([total_ndcg, float(len(ranks))], dtype=torch.float64, device=self.device)
        total = self.trainer.strategy.reduce(local, reduce_op="sum")
        if total[1] == 0:
            raise ValueError(f"no users with a valid target in split {self.split.kind!r}: nothing to validate on")
        return float(total[0] / total[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = self.rec.param_groups() if hasattr(self.rec, "param_groups") else self.net.parameters()
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self._configured_lrs = [g["lr"] for g in opt.param_groups]
        # stepped here, not by Lightning: Lightning steps schedulers after the epoch's checkpoint is written and
        # skips that step on resume, so a resumed run would lose one validation of its plateau count
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=self.cfg.lr_factor, patience=self.cfg.lr_patience, min_lr=self.cfg.min_lr
            )
            if self.cfg.lr_schedule == "plateau"
            else None
        )
        return opt

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["padrec"] = {
            "configured_lrs": self._configured_lrs,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored = checkpoint.get("padrec") or {}

    def on_train_start(self) -> None:
        # a resumed run goes on from its checkpoint's epoch: epochs timed after it (a run killed mid-epoch, or
        # checkpoints written before last.ckpt was saved every epoch) are trained again and timed again
        self.timings = {k: v[: self.current_epoch] for k, v in self.timings.items()}
        # a resumed run restores the optimizer's saved learning rates. When the run's config asks for another
        # one (``lr=`` given with --resume, rewritten to config.yaml) the config must win, or the override would
        # be silently ignored, and a plateau schedule starts afresh; with the same config the restored rate (maybe
        # lowered by the schedule) and the schedule's count carry on. Checkpoints without this record: config wins.
        restored = getattr(self, "_restored", None)
        if restored is None:
            return
        if restored.get("configured_lrs") == self._configured_lrs:
            if self.plateau is not None and restored.get("plateau"):
                self.plateau.load_state_dict(restored["plateau"])
            return
        for group, lr in zip(self.trainer.optimizers[0].param_groups, self._configured_lrs, strict=True):
            group["lr"] = lr


def validation_users(split: Split, n: int | None, seed: int) -> np.ndarray | None:
    """Positions of a seeded, sorted sample of ``n`` validation users (None = all of them).

    The same users at every validation, so early stopping compares like with like."""
    total = len(split.users("valid"))
    if n is None or n >= total:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def validation_ranks(
    rec: Any,
    split: Split,
    batch_size: int = 1024,
    max_users: int | None = None,
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> np.ndarray:
    """Full-ranking ranks of the validation users (a seeded sample when ``max_users``); ``shard=(rank, world)``
    keeps every world-th of them, starting at rank, so DDP ranks split the work without overlap."""
    from padrec.eval.evaluator import Evaluator
    from padrec.eval.protocol import Protocol

    subset = validation_users(split, max_users, seed)
    rank, world = shard
    if world > 1:
        subset = (np.arange(len(split.users("valid"))) if subset is None else subset)[rank::world]
    return Evaluator(split, Protocol(batch_size=batch_size)).ranks(rec, "valid", subset=subset)


def validation_ndcg(
    rec: Any, split: Split, batch_size: int = 1024, max_users: int | None = None, seed: int = 0
) -> float:
    """Full-ranking NDCG@10 on the validation targets (of a seeded user sample when ``max_users`` is set)."""
    from padrec.eval.metrics import metrics_from_ranks

    ranks = validation_ranks(rec, split, batch_size, max_users, seed)
    if len(ranks) == 0:
        raise ValueError(f"no users with a valid target in split {split.kind!r}: nothing to validate on")
    return float(metrics_from_ranks(ranks, (10,))["NDCG@10"])


def sequence_loader(rec: Any, split: Split) -> DataLoader:
    """Users with something to predict, batched into next-item or cloze examples.

    Batches are always cropped to their longest history (no output changes, see :class:`NextItemBatches`);
    ``length_buckets`` also groups users of similar length, so little padding is left at all."""
    cfg = rec.train_cfg
    seqs = split.train_sequences()
    lengths = np.diff(split.train_offsets)
    if rec.net.bidirectional:
        collate: Any = MaskedItemBatches(seqs, rec.max_len, rec.net.mask_id, rec.mask_prob, cfg.seed, crop=True)
        users = np.flatnonzero(lengths >= 1)
    else:
        collate = NextItemBatches(seqs, rec.max_len, crop=True)
        users = np.flatnonzero(lengths >= 2)
    if not cfg.length_buckets:
        return DataLoader(_Users(users), batch_size=cfg.batch_size, shuffle=True, collate_fn=collate)
    kept = np.minimum(lengths[users], rec.max_len + (0 if rec.net.bidirectional else 1))
    sampler = LengthBucketSampler(kept, cfg.batch_size)
    loader = DataLoader(_Users(users), batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate)
    targets = np.maximum(1, rec.mask_prob * kept) if rec.net.bidirectional else kept - 1
    loader.positions_per_batch = float(targets.sum()) / len(loader)  # type: ignore[attr-defined]
    return loader


class LengthBucketSampler(Sampler[int]):
    """Random batches of similar lengths: shuffle, sort each window of ``window`` batches by length,
    cut it into batches and shuffle the order of the batches. Every index once per epoch; randomness
    from torch's global generator, so ``seed_everything`` makes epochs reproducible. Under DDP Lightning
    deals this stream out to the ranks, which keeps neighbouring (similar) lengths together."""

    def __init__(self, lengths: np.ndarray, batch_size: int, window: int = 50) -> None:
        self.lengths, self.batch_size, self.window = np.asarray(lengths), batch_size, window
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator | None:
        """Under DDP every rank must draw the same stream (each keeps every world_size-th index of it), but the
        ranks' global generators drift apart after one epoch (dropout draws batch-shaped noise): seed from
        (seed, epoch) there. A single process keeps the global generator, so its runs are unchanged."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return None
        if torch.distributed.get_world_size() < 2:
            return None
        return torch.Generator().manual_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)) * 100_003 + self.epoch)

    def __iter__(self) -> Any:
        gen = self._generator()
        order = torch.randperm(len(self.lengths), generator=gen).numpy()
        span = self.batch_size * self.window
        batches: list[np.ndarray] = []
        for lo in range(0, len(order), span):
            part = order[lo : lo + span]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        # the loader re-cuts this stream every batch_size indices: the one short batch must come last
        full = [b for b in batches if len(b) == self.batch_size]
        for k in torch.randperm(len(full), generator=gen).tolist():
            yield from full[k].tolist()
        for b in batches:
            if len(b) < self.batch_size:
                yield from b.tolist()


def default_run_dir(dataset: str, model: str) -> Path:
    """A fresh ``runs/<dataset>/<model>-<time>`` folder; a second run in the same second gets ``-2``, ``-3``...

    Two fits must never share a folder: the second would mix its checkpoints and logs into the first's.
    """
    base = Path("runs") / dataset / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def quiet_lightning() -> None:
    """Silence Lightning's notices that say nothing about the user's run (shared by every padrec trainer)."""
    from padrec.progress import quiet_libraries

    quiet_libraries()  # also: in-memory tensors need no DataLoader workers, so that notice is off
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")  # Lightning vs torch 2.13


class _ConfiguredEarlyStopping(EarlyStopping):
    """Early stopping whose ``patience`` is the run's config even on ``--resume``: Lightning restores the
    checkpoint's, so ``--resume patience=8`` after a patience-4 stop would stop again at once."""

    @property
    def state_key(self) -> str:  # Lightning's own key, so checkpoints of either class resume into the other
        return f"EarlyStopping{ {'monitor': self.monitor, 'mode': self.mode}!r}"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience


def _progress(cfg: Any, run_dir: Path, rec: Any) -> list[Any]:
    """The stage's one progress bar, labelled by its folder (a PAD stage: ``pretrain``, ``align``...)."""
    from padrec.progress import stage_callback

    if not cfg.progress:
        return []
    stages = ("pretrain", "align", "text-expert", "pad")
    label = f"{run_dir.name} ({rec.name})" if run_dir.name in stages and run_dir.name != rec.name else rec.name
    return [stage_callback(label)]


def check_loggers(cfg: Any) -> None:
    """Fail before any work when an asked-for logger's package is missing (one line, with the install command)."""
    wanted = cfg.logger or []
    if "mlflow" in wanted and importlib.util.find_spec("mlflow") is None:
        raise ImportError("logger=mlflow needs MLflow: pip install 'padrec[mlflow]'")
    if "tensorboard" in wanted and importlib.util.find_spec("tensorboard") is None:
        raise ImportError("logger=tensorboard needs TensorBoard: pip install tensorboard")


def make_loggers(cfg: Any, run_dir: Path, version: str, dataset: str, params: dict[str, Any]) -> list[Any]:
    """Lightning loggers of one (re)start. The CSV log is always kept: run reports and ``best_epoch`` read it.

    ``cfg.logger`` None means csv + TensorBoard when it is installed. MLflow gets one run per (re)start, like
    ``logs/runN`` (a resumed run may change its params, which MLflow never lets a run do), with the run's
    config as params and its folder as a tag.
    """
    check_loggers(cfg)
    wanted = cfg.logger if cfg.logger is not None else ["csv", "tensorboard"]
    loggers: list[Any] = [L.pytorch.loggers.CSVLogger(run_dir, name="logs", version=version)]
    if "tensorboard" in wanted and importlib.util.find_spec("tensorboard") is not None:
        loggers.append(L.pytorch.loggers.TensorBoardLogger(run_dir, name="logs", version=version))
    if "mlflow" in wanted:
        import mlflow
        from lightning.pytorch.loggers import MLFlowLogger

        uri = cfg.mlflow_uri or mlflow.get_tracking_uri()  # MLflow's own default, as `mlflow ui` reads it
        if urlparse(uri).scheme in ("", "file") or len(urlparse(uri).scheme) == 1:  # a folder (or C:\...)
            # MLflow 3 refuses file stores unless told; one named explicitly is what the user wants
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        where = run_dir.resolve()
        mlf = MLFlowLogger(
            experiment_name=cfg.mlflow_experiment or dataset,
            run_name=f"{where.parent.name}/{where.name}",  # runs/ml-1m/pad-sasrec/align -> pad-sasrec/align
            tracking_uri=uri,
            tags={"padrec.run_dir": str(where), "padrec.restart": version},
        )
        mlf.log_hyperparams(params)
        loggers.append(mlf)
    return loggers


def _steps_per_epoch(n_batches: int, limit: float) -> int:
    """Lightning's reading of ``limit_train_batches``: a count when above 1, else a fraction (few steps: log
    every one rather than warn that the epoch is shorter than the logging interval)."""
    return min(n_batches, int(limit)) if limit > 1 else int(n_batches * limit)


def train(rec: Any, split: Split, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Fit ``rec`` on ``split``; the best validation checkpoint is restored and saved in ``run_dir``."""
    cfg = rec.train_cfg
    run_dir = Path(run_dir) if run_dir else default_run_dir(split.dataset.name, rec.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        run_dir / "config.yaml",
        yaml.safe_dump({"model": rec.name, "dataset": split.dataset.name, **rec.config}, sort_keys=False),
    )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    loader = rec.train_loader(split)
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(ckpt_dir, filename="best", monitor=VAL_METRIC, mode="max")
    # every epoch, for --resume (``save_last=True`` on ``best`` only rewrites it when ``best`` improves, so a
    # resumed run would repeat every epoch since the last improvement)
    last = ModelCheckpoint(ckpt_dir, filename="last", enable_version_counter=False)
    stop = _ConfiguredEarlyStopping(VAL_METRIC, mode="max", patience=cfg.patience, strict=cfg.val_every == 1)
    # one log folder per (re)start: a resumed run must never overwrite the earlier epochs' logs
    version = f"run{len(list((run_dir / 'logs').glob('run*')))}"
    quiet_lightning()  # before the loggers: MLflow's store warns on creation
    loggers = make_loggers(cfg, run_dir, version, split.dataset.name, {"model": rec.name, **rec.config})
    if cfg.val_every > 1:  # epochs without validation are expected: no checkpoint warning for them
        warnings.filterwarnings("ignore", ".*could not find the monitored key.*")
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        callbacks=[best, last, stop, LearningRateMonitor("epoch"), *_progress(cfg, run_dir, rec)],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,  # one bar per stage instead (padrec.progress)
        enable_model_summary=False,
        limit_train_batches=cfg.limit_train_batches,
        precision=cfg.precision,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(10, _steps_per_epoch(len(loader), cfg.limit_train_batches))),
        deterministic=False,
    )
    last_path = ckpt_dir / "last.ckpt"
    resumed = bool(resume and last_path.exists())
    module = RecLightning(rec, split, run_dir / "epoch_times.json", resumed)
    module.positions_per_batch = getattr(loader, "positions_per_batch", None)
    module.train()  # parts copied from fitted (eval-mode) models must train with dropout on
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        if resumed:  # goes on in its own checkpoint folder on purpose (a fresh run there still gets the warning)
            warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        trainer.fit(module, loader, ckpt_path=str(last_path) if resumed else None)
    elapsed = time.perf_counter() - t0
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        rec.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    rec.net.cpu().eval()  # a fitted model scores; score() then never toggles modes
    if trainer.is_global_zero:
        rec.save(run_dir)
        times, score = module.timings, best.best_model_score
        if not times["train"] and module.times_path.is_file():  # ddp_spawn: the ranks kept them, rank 0 wrote them
            times = json.loads(module.times_path.read_text())
        if score is None and best.best_model_path:  # ddp_spawn hands back the best path, not its score
            score = max((v for v in times["ndcg"] if v is not None), default=None)
        summary = {
            "epochs": max(trainer.current_epoch, len(times["train"])),
            "best_epoch": _best_epoch(run_dir),
            VAL_METRIC: float(score) if score is not None else None,
            "train_seconds": elapsed,  # this (re)start only
            "seconds_per_epoch": (  # training only, over every epoch of every (re)start
                float(np.mean(times["train"])) if times["train"] else None
            ),
        }
        atomic_write_text(run_dir / "train.json", json.dumps(summary, indent=2))
    return run_dir


def read_metrics(run_dir: str | Path) -> Any:
    """All logged metrics of a run, every (re)start concatenated in order, as a DataFrame."""
    import pandas as pd

    paths = sorted(Path(run_dir).glob("logs/run*/metrics.csv"), key=lambda p: int(p.parent.name[3:]))
    frames = [pd.read_csv(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _best_epoch(run_dir: Path) -> int | None:
    df = read_metrics(run_dir)
    if VAL_METRIC not in df:
        return None
    df = df.dropna(subset=[VAL_METRIC])
    return int(df.loc[df[VAL_METRIC].idxmax(), "epoch"]) if len(df) else None
