"""One progress display per stage, and a quiet switch for everything else.

Training shows a single bar per stage (``pretrain``, ``align``, ...) over ``max_epochs`` epochs, with the epoch,
loss, validation NDCG@10 and patience in its postfix; its ETA is the time to ``max_epochs`` (early stopping may end
sooner). Lightning's own multi-line bar, sentence-transformers' encode bars and the weight-loading bars of
transformers are switched off. ``set_quiet(True)`` (the CLI's ``--quiet`` and ``--json``) hides every bar.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET or os.environ.get("PADREC_QUIET", "") not in ("", "0")


def bar(
    total: int | None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    iterable: Any = None,
) -> Any:
    """A tqdm bar on stderr (disabled when quiet); redrawn at most every 0.5 s (every 30 s into a log file)."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled or is_quiet(),
        leave=leave,
        mininterval=0.5 if tty else 30.0,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def quiet_libraries() -> None:
    """Silence library chatter that says nothing about the user's run (idempotent, cheap when absent)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("sentence_transformers", "transformers", "huggingface_hub", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        try:
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        except Exception:  # pragma: no cover - very old transformers
            pass
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*TRANSFORMERS_CACHE.*")
    warnings.filterwarnings("ignore", ".*``noload`` loader strategy is deprecated.*")  # MLflow's sqlite store


def stage_callback(label: str) -> Any:
    """A Lightning callback drawing one bar for the whole fit (imported lazily: Lightning is heavy)."""
    from lightning.pytorch.callbacks import Callback

    from padrec.train.trainer import VAL_METRIC

    class StageProgress(Callback):
        def __init__(self) -> None:
            self.bar: Any = None

        def on_train_start(self, trainer: Any, module: Any) -> None:
            if not trainer.is_global_zero:
                return
            per_epoch = int(trainer.num_training_batches)
            total = per_epoch * int(trainer.max_epochs)
            if trainer.max_steps and trainer.max_steps > 0:  # a step budget (PALR fine-tuning) ends sooner
                total = min(total, int(trainer.max_steps) * int(trainer.accumulate_grad_batches))
            self.bar = bar(total, label, unit="batch")
            self.bar.update(per_epoch * int(trainer.current_epoch))  # a resumed run starts part-way
            self.bar.set_postfix_str(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", refresh=False)

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, idx: int) -> None:
            if self.bar is not None:
                self.bar.update(1)

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            if self.bar is None:
                return
            m = trainer.callback_metrics
            parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
            if "train_loss_epoch" in m:
                parts.append(f"loss {float(m['train_loss_epoch']):.4f}")
            if VAL_METRIC in m:
                val = float(m[VAL_METRIC])
                # the best so far is the checkpoint callback's (restored on --resume; it sees this epoch after us)
                saved = getattr(trainer.checkpoint_callback, "best_model_score", None)
                best = val if saved is None else max(val, float(saved))
                parts.append(f"val NDCG@10 {val:.4f} (best {best:.4f})")
            self.bar.set_postfix_str(", ".join(parts))

        def on_train_end(self, trainer: Any, module: Any) -> None:
            if self.bar is not None:
                # early stopping: show the stage as done, not stuck part-way
                self.bar.total = self.bar.n
                self.bar.refresh()
                self.bar.close()
                self.bar = None

        def on_exception(self, trainer: Any, module: Any, exc: BaseException) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return StageProgress()
