"""Instruction fine-tuning of a causal LM with Lightning: LoRA (peft, default) or full fine-tuning.

The loss is next-token cross-entropy on the **answer tokens only** (prompt and padding labels are
-100). Lightning owns the loop, CSV logs (one ``logs/runN`` folder per (re)start), atomic checkpoints
(:class:`padrec.train.trainer.AtomicCheckpointIO`) every ``checkpoint_every`` steps and resume from
``checkpoints/last.ckpt``. With LoRA a checkpoint stores only the trainable (adapter) weights and the
optimizer, not the frozen base model. The result is ``out_dir/adapter`` (LoRA, loadable with
:func:`padrec.palr.lm.load_causal_lm`) or ``out_dir/model`` (full), and ``out_dir/finetune.json``,
written last, marks the stage finished.

With ``select_every`` > 0 (:class:`BestOnValidation`) the model is ranked on a fixed sample of validation users every
``select_every`` steps and at the end; the best adapter is kept in ``out_dir/best`` (the stage's result), training
stops after ``select_patience`` evaluations without improvement, and the selection state lives in the checkpoints
(a resumed run continues its history).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from padrec.palr.config import PALRConfig
from padrec.palr.lm import BASE_FILE, CausalLM, peft_quiet
from padrec.palr.prompts import PROMPT_VERSION
from padrec.train.trainer import AtomicCheckpointIO, quiet_lightning
from padrec.utils import atomic_write_text

DONE_FILE = "finetune.json"
BEST_DIR = "best"
BEST_FILE = "selected.json"  # inside best/: the step and score of the weights there

#: ``score(lm) -> (NDCG@10, users)`` of a model on the selection users (:func:`padrec.palr.pipeline.selection_score`)
SelectScore = Callable[[CausalLM], tuple[float, int]]


def tokenize_examples(
    lm: CausalLM, examples: Sequence[dict], max_seq_len: int
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """``(input_ids, labels)`` per example (labels -100 on the prompt) and how many prompts were cut.

    An example with an ``answer_prefix`` (the verbalizer's ``"["``) is read as ``wrap(prompt) + answer_prefix``,
    exactly the text the verbalizer ranker scores, and its targets are the answer's tokens as they follow that
    text (the label token), with no end-of-sequence token: the loss is on the very token the ranker reads.
    Other answers are encoded alone and end with the end-of-sequence token.
    An over-long example loses prompt tokens from the left; the answer is always kept whole.
    """
    out, cut = [], 0
    for e in examples:
        prefix = e.get("answer_prefix")
        if prefix is None:
            p = lm.encode(lm.wrap(e["prompt"]))
            a = [*lm.encode(e["answer"]), lm.eos_id]
        else:
            head = lm.wrap(e["prompt"]) + prefix
            p, full = lm.encode(head), lm.encode(head + e["answer"])
            if full[: len(p)] != p or len(full) == len(p):
                raise ValueError(f"answer {e['answer']!r} does not tokenize on its own after {prefix!r} for {lm.spec}")
            a = full[len(p) :]
        a = a[:max_seq_len]
        room = max_seq_len - len(a)
        if len(p) > room:
            p = p[len(p) - room :] if room > 0 else []
            cut += 1
        out.append((p + a, [-100] * len(p) + a))
    return out, cut


class _Examples(Dataset):
    def __init__(self, rows: list[tuple[list[int], list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.rows[i]


class _Collate:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (x, y) in enumerate(rows):
            ids[r, : len(x)] = torch.tensor(x)
            labels[r, : len(y)] = torch.tensor(y)
            mask[r, : len(x)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LMFineTuning(L.LightningModule):
    """Causal-LM loss on the answer tokens; checkpoints keep only trainable weights."""

    def __init__(self, model: Any, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.strict_loading = False  # checkpoints hold the trainable weights only
        self.losses: list[float] = []

    def _trainable(self) -> set[str]:
        return {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        out = self.model(**batch)
        n = int((batch["labels"] != -100).sum())
        self.log("train_loss", out.loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.losses.append(float(out.loss.detach()))
        return out.loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self._trainable()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}


class BestOnValidation(Callback):
    """Model selection during fine-tuning: every ``cfg.select_every`` optimiser steps (and once at the end of
    training) ``score`` ranks the validation sample with the model under training (eval mode, inference mode, then
    back to train mode); a strictly better NDCG@10 saves the adapter to ``out_dir/best`` (atomically), and
    ``cfg.select_patience`` evaluations without one stop training.

    The history, best step/score and patience count are the callback's ``state_dict``, so they are in every
    Lightning checkpoint; a checkpoint is also written right after each evaluation (``last``), so a killed run
    resumes with every evaluation it finished instead of re-running or forgetting them."""

    def __init__(
        self, score: SelectScore, lm: CausalLM, cfg: PALRConfig, out_dir: Path, last: Path | None = None
    ) -> None:
        self.score, self.lm, self.cfg, self.out_dir, self.last = score, lm, cfg, Path(out_dir), last
        self.evaluations: list[dict[str, Any]] = []
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.bad = 0  # evaluations since the last improvement
        self.stopped_early = False

    # -- state (in last.ckpt) ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "evaluations": [dict(e) for e in self.evaluations],
            "best_step": self.best_step,
            "best_score": self.best_score,
            "bad": self.bad,
            "stopped_early": self.stopped_early,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluations = [dict(e) for e in state.get("evaluations", [])]
        self.best_step, self.best_score = state.get("best_step"), state.get("best_score")
        self.bad, self.stopped_early = int(state.get("bad", 0)), bool(state.get("stopped_early", False))
        # a kill between saving best/ and the next checkpoint leaves best/ ahead of this state: best/ holds the
        # weights, so its step and score are the best ones (the step is evaluated again when training reaches it)
        saved = read_best(self.out_dir)
        if saved is not None and saved["step"] != self.best_step:
            self.best_step, self.best_score = int(saved["step"]), float(saved["score"])

    # -- hooks -------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.stopped_early:  # resumed from the checkpoint of the evaluation that stopped it
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *_: Any) -> None:
        step = int(trainer.global_step)
        if step > 0 and step % self.cfg.select_every == 0 and not self.evaluated(step):
            self.evaluate(trainer, module)
            if self.stopped_early:
                trainer.should_stop = True
            # ModelCheckpoint (always run after this callback) saves this step anyway
            if step % self.cfg.checkpoint_every != 0:
                self._checkpoint(trainer)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.pending(int(trainer.global_step)):  # the last weights are a candidate too
            self.evaluate(trainer, module)
            self._checkpoint(trainer)

    # -- the work ----------------------------------------------------------------------------------------
    def evaluated(self, step: int) -> bool:
        return bool(self.evaluations) and self.evaluations[-1]["step"] == step

    def pending(self, step: int) -> bool:
        """Whether the weights of ``step`` still need their (final) evaluation."""
        return step > 0 and not self.stopped_early and not self.evaluated(step)

    def evaluate(self, trainer: L.Trainer, module: LMFineTuning) -> dict[str, Any]:
        step = int(trainer.global_step)
        model = module.model
        # rank with the bare HF model (LoRA layers injected): its forward takes position_ids/logits_to_keep like the
        # merged model ranked at inference; peft's wrapper hides them
        net = model.get_base_model() if hasattr(model, "get_base_model") else model
        was = model.training
        model.eval()
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                score, users = self.score(CausalLM(net, self.lm.tokenizer, self.lm.spec))
        finally:
            model.train(was)
        score = float(score)
        improved = self.best_score is None or score > self.best_score
        if improved:
            _save(model, self.lm, self.cfg, self.out_dir, BEST_DIR, {"step": step, "score": score})
            self.best_step, self.best_score, self.bad = step, score, 0
        else:
            self.bad += 1
            self.stopped_early = self.bad >= self.cfg.select_patience
        entry = {"step": step, "NDCG@10": score, "users": int(users), "seconds": round(time.perf_counter() - t0, 3)}
        self.evaluations.append(entry)
        if self.cfg.progress:
            _say(
                f"finetune step {step}: valid NDCG@10 {score:.4f} on {users} users (best {self.best_score:.4f} at "
                f"step {self.best_step}{', saved' if improved else ''}"
                f"{f', stopping: {self.bad} without improvement' if self.stopped_early else ''})"
            )
        return entry

    def _checkpoint(self, trainer: L.Trainer) -> None:
        if self.last is not None:
            trainer.save_checkpoint(self.last)

    def record(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "metric": "NDCG@10",
            "stage": "valid",
            "every": cfg.select_every,
            "users": cfg.select_users,
            "users_seed": cfg.users_seed,
            "patience": cfg.select_patience,
            "mode": cfg.mode,
            "retriever": cfg.retriever,
            "n_candidates": cfg.n_candidates,
            "evaluations": [dict(e) for e in self.evaluations],
            "best_step": self.best_step,
            "best_score": self.best_score,
            "stopped_early": self.stopped_early,
        }


def _say(line: str) -> None:
    """One line on stderr that leaves the stage's progress bar intact (nothing when quiet)."""
    import sys

    from tqdm.auto import tqdm

    from padrec.progress import is_quiet

    if not is_quiet():
        tqdm.write(line, file=sys.stderr)


def read_best(out_dir: str | Path) -> dict[str, Any] | None:
    """``{"step", "score"}`` of the adapter in ``out_dir/best``, or ``None`` when there is none."""
    path = Path(out_dir) / BEST_DIR / BEST_FILE
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
        return {"step": int(got["step"]), "score": float(got["score"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare_model(lm: CausalLM, cfg: PALRConfig) -> Any:
    """The model to train: a peft LoRA wrapper (only adapters trainable) or the whole model."""
    model = lm.model
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        targets = [t for t in cfg.lora_targets if t in names]
        if not targets:
            raise ValueError(f"none of lora_targets {list(cfg.lora_targets)} is a module of {lm.spec!r}")
        layers = None
        if cfg.lora_layers is not None:
            n = int(model.config.num_hidden_layers)
            if cfg.lora_layers > n:
                raise ValueError(f"lora_layers={cfg.lora_layers}, but {lm.spec!r} has {n} decoder layers")
            layers = list(range(n - cfg.lora_layers, n))  # the top ones: gradients never flow below them
        conf = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            layers_to_transform=layers,
            task_type="CAUSAL_LM",
        )
        with peft_quiet():
            model = get_peft_model(model, conf)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    return model


def finetune(
    lm: CausalLM,
    examples: Sequence[dict],
    cfg: PALRConfig,
    out_dir: str | Path,
    resume: bool = True,
    record: dict[str, Any] | None = None,
    select: SelectScore | None = None,
) -> tuple[CausalLM, dict[str, Any]]:
    """Fine-tune ``lm`` on instruction ``examples``; returns the trained (merged, eval-mode) model and a summary
    (``record`` is added to it, e.g. what the instruction data was built from).

    With ``cfg.select_every`` > 0, ``select`` scores the model on validation users (see :class:`BestOnValidation`)
    and the result is the best evaluated weights (``out_dir/best``), not the last."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not examples:
        raise ValueError("no instruction examples to fine-tune on")
    if cfg.select_every > 0 and select is None:
        raise ValueError(
            f"select_every={cfg.select_every} needs validation users to select on: pass select= "
            "(padrec.palr.pipeline.run_finetune does), or set select_every=0"
        )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    rows, cut = tokenize_examples(lm, examples, cfg.max_seq_len)
    model = prepare_model(lm, cfg)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loader = DataLoader(
        _Examples(rows), batch_size=cfg.batch_size, shuffle=True, collate_fn=_Collate(lm.tokenizer.pad_token_id)
    )
    ckpt_dir = out_dir / "checkpoints"
    # no version counter: last.ckpt is always THE last checkpoint (selection saves it too, and a fresh start's
    # saves must replace an earlier run's, not go to last-v1.ckpt where a resume would not look)
    ckpt = ModelCheckpoint(
        ckpt_dir,
        save_top_k=0,
        save_last=True,
        every_n_train_steps=cfg.checkpoint_every,
        monitor=None,
        enable_version_counter=False,
    )
    version = f"run{len(list((out_dir / 'logs').glob('run*')))}"
    quiet_lightning()
    from padrec.progress import stage_callback

    last = ckpt_dir / "last.ckpt"
    resumed = bool(resume and last.exists())
    chooser = None
    if cfg.select_every > 0:
        if not resumed and (out_dir / BEST_DIR).exists():  # a fresh start: an earlier run's best is not a candidate
            shutil.rmtree(out_dir / BEST_DIR)
        chooser = BestOnValidation(select, lm, cfg, out_dir, last)

    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        max_steps=cfg.max_steps,
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        accumulate_grad_batches=cfg.grad_accum,
        callbacks=[
            ckpt,
            *([chooser] if chooser is not None else []),  # Lightning runs checkpoint callbacks last: ours is saved
            *([stage_callback("finetune (LoRA)")] if cfg.progress else []),
        ],
        logger=L.pytorch.loggers.CSVLogger(out_dir, name="logs", version=version),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,  # one bar per stage instead (padrec.progress)
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        gradient_clip_val=1.0,
        deterministic=False,
    )
    module = LMFineTuning(model, cfg.lr, cfg.weight_decay)
    t0 = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=str(last) if resumed else None)
    if chooser is not None and chooser.pending(int(trainer.global_step)):
        # resumed from a checkpoint at max_steps whose final evaluation a kill cut short (fit ran no hook)
        chooser.evaluate(trainer, module)
    elapsed = time.perf_counter() - t0
    model = module.model.cpu()
    model.eval()
    saved = last_saved = _save(model, lm, cfg, out_dir)
    merged = model.merge_and_unload() if cfg.method == "lora" else model
    result = CausalLM(merged, lm.tokenizer, str(saved))
    if chooser is not None and read_best(out_dir) is not None:
        saved = out_dir / BEST_DIR
        from padrec.palr.lm import load_causal_lm

        result = load_causal_lm(str(saved))  # exactly what a rerun reuses (finetuned_path)
    summary = {
        "lm": lm.spec,
        "method": cfg.method,
        "path": str(saved),
        "last_path": str(last_saved),
        "examples": len(rows),
        "truncated_prompts": cut,
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "trainable_parameters": int(n_trainable),
        "first_loss": module.losses[0] if module.losses else None,
        "last_loss": module.losses[-1] if module.losses else None,
        "seconds": round(elapsed, 3),
        "resumed": resumed,
        "prompt_version": PROMPT_VERSION,
        "config": cfg.model_dump(mode="json"),
        **({"selection": chooser.record()} if chooser is not None else {}),
        **(record or {}),
    }
    atomic_write_text(out_dir / DONE_FILE, json.dumps(summary, indent=2))
    return result, summary


def _save(
    model: Any, lm: CausalLM, cfg: PALRConfig, out_dir: Path, name: str | None = None, marker: dict | None = None
) -> Path:
    """Save the adapter (LoRA) or the whole model next to the tokenizer, atomically (temp dir + rename), in
    ``out_dir/name`` (default ``adapter`` / ``model``); ``marker`` is written into it as ``selected.json``."""
    target = out_dir / (name or ("adapter" if cfg.method == "lora" else "model"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=out_dir))
    try:
        model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        if marker is not None:
            (tmp / BEST_FILE).write_text(json.dumps(marker))
        if cfg.method == "lora":
            spec = lm.spec
            if spec not in ("smollm2", "gemma3-270m", "gemma3") and not spec.startswith("hf:"):
                spec = str(Path(spec).resolve())
            (tmp / BASE_FILE).write_text(json.dumps({"spec": spec}))
        # a directory cannot be replaced in one rename: move the old one aside first (two renames, no copy)
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=out_dir)) if target.exists() else None
        if old is not None:
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def finetuned_path(out_dir: str | Path) -> Path | None:
    """The saved adapter/model of a finished fine-tuning stage, or ``None``."""
    done = Path(out_dir) / DONE_FILE
    if not done.is_file():
        return None
    return Path(out_dir) / Path(json.loads(done.read_text())["path"]).name
