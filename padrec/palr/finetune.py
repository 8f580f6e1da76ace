"""Instruction fine-tuning of a causal LM with Lightning: LoRA (peft, default) or full fine-tuning.

The loss is next-token cross-entropy on the **answer tokens only** (prompt and padding labels are
-100). Lightning owns the loop, CSV logs (one ``logs/runN`` folder per (re)start), atomic checkpoints
(:class:`padrec.train.trainer.AtomicCheckpointIO`) every ``checkpoint_every`` steps and resume from
``checkpoints/last.ckpt``. With LoRA a checkpoint stores only the trainable (adapter) weights and the
optimizer, not the frozen base model. The result is ``out_dir/adapter`` (LoRA, loadable with
:func:`padrec.palr.lm.load_causal_lm`) or ``out_dir/model`` (full), and ``out_dir/finetune.json``,
written last, marks the stage finished.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from padrec.palr.config import PALRConfig
from padrec.palr.lm import BASE_FILE, CausalLM, peft_quiet
from padrec.palr.prompts import PROMPT_VERSION
from padrec.train.trainer import AtomicCheckpointIO, quiet_lightning
from padrec.utils import atomic_write_text

DONE_FILE = "finetune.json"


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


def prepare_model(lm: CausalLM, cfg: PALRConfig) -> Any:
    """The model to train: a peft LoRA wrapper (only adapters trainable) or the whole model."""
    model = lm.model
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        targets = [t for t in cfg.lora_targets if t in names]
        if not targets:
            raise ValueError(f"none of lora_targets {list(cfg.lora_targets)} is a module of {lm.spec!r}")
        conf = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
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
) -> tuple[CausalLM, dict[str, Any]]:
    """Fine-tune ``lm`` on instruction ``examples``; returns the trained (merged, eval-mode) model and a summary
    (``record`` is added to it, e.g. what the instruction data was built from)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not examples:
        raise ValueError("no instruction examples to fine-tune on")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    rows, cut = tokenize_examples(lm, examples, cfg.max_seq_len)
    model = prepare_model(lm, cfg)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loader = DataLoader(
        _Examples(rows), batch_size=cfg.batch_size, shuffle=True, collate_fn=_Collate(lm.tokenizer.pad_token_id)
    )
    ckpt_dir = out_dir / "checkpoints"
    ckpt = ModelCheckpoint(
        ckpt_dir, save_top_k=0, save_last=True, every_n_train_steps=cfg.checkpoint_every, monitor=None
    )
    version = f"run{len(list((out_dir / 'logs').glob('run*')))}"
    quiet_lightning()
    from padrec.progress import stage_callback

    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        max_steps=cfg.max_steps,
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        accumulate_grad_batches=cfg.grad_accum,
        callbacks=[ckpt, *([stage_callback("finetune (LoRA)")] if cfg.progress else [])],
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
    last = ckpt_dir / "last.ckpt"
    resumed = bool(resume and last.exists())
    t0 = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=str(last) if resumed else None)
    elapsed = time.perf_counter() - t0
    model = module.model.cpu()
    model.eval()
    saved = _save(model, lm, cfg, out_dir)
    merged = model.merge_and_unload() if cfg.method == "lora" else model
    summary = {
        "lm": lm.spec,
        "method": cfg.method,
        "path": str(saved),
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
        **(record or {}),
    }
    atomic_write_text(out_dir / DONE_FILE, json.dumps(summary, indent=2))
    return CausalLM(merged, lm.tokenizer, str(saved)), summary


def _save(model: Any, lm: CausalLM, cfg: PALRConfig, out_dir: Path) -> Path:
    """Save the adapter (LoRA) or the whole model next to the tokenizer, atomically (temp dir + rename)."""
    target = out_dir / ("adapter" if cfg.method == "lora" else "model")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=out_dir))
    try:
        model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        if cfg.method == "lora":
            spec = lm.spec
            if spec not in ("smollm2", "gemma3-270m", "gemma3") and not spec.startswith("hf:"):
                spec = str(Path(spec).resolve())
            (tmp / BASE_FILE).write_text(json.dumps({"spec": spec}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
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
