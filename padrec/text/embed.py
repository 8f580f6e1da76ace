"""Item texts from templates, and their embeddings cached by (encoder, template, texts).

The cache key covers the encoder's name and weights, the template and a hash of every item id and
text, so any change recomputes and nothing stale is ever served. Files are written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from padrec.data.dataset import SeqDataset
from padrec.data.paths import cache_dir
from padrec.text.encoders import Encoder, Pooling, _weights_hash, load_encoder, minilm_path
from padrec.utils import atomic_path, atomic_write_text, sha256_text

#: Per-dataset templates (Python format strings over item-table columns).
TEMPLATES: dict[str, str] = {
    "ml-1m": "{title}; {genres}",
    "ml-100k": "{title}; {genres}",
    "amazon-beauty": "{title}",
    "amazon-sports": "{title}",
    "amazon-toys": "{title}",
    "mind": "{title}",
}
#: Text used when an item has no text at all: its external id, so it is never empty and never NaN.
FALLBACK = "item {item_id}"


def default_template(ds: SeqDataset) -> str:
    if ds.name in TEMPLATES:
        return TEMPLATES[ds.name]
    cols = [c for c in (ds.item_table.columns if ds.item_table is not None else []) if c != "item_id"]
    return "; ".join(f"{{{c}}}" for c in cols) if cols else FALLBACK


def render_texts(ds: SeqDataset, template: str | None = None) -> list[str]:
    """One text per internal id 1..n. Missing fields render empty; an empty result uses ``FALLBACK``."""
    template = template or default_template(ds)
    table = ds.item_table if ds.item_table is not None else pd.DataFrame({"item_id": ds.item_ids})
    rows = table.iloc[1:].astype(object).where(table.iloc[1:].notna(), "").to_dict("records")
    out = []
    for row in rows:
        row = {k: ("" if v is None else str(v).replace("|", ", ")) for k, v in row.items()}
        try:
            text = template.format(**row)
        except KeyError as e:
            raise KeyError(
                f"template {template!r} uses column {e.args[0]!r}; item table columns: {', '.join(table.columns)}"
            ) from None
        text = text.strip().strip(";").strip()
        out.append(text if text else FALLBACK.format(item_id=row.get("item_id", "")))
    return out


@dataclass
class ItemEmbeddings:
    vectors: np.ndarray  # [n_items + 1, D], row 0 (padding) is zero
    manifest: dict[str, Any]
    path: Path
    from_cache: bool
    seconds: float


def embed_items(
    ds: SeqDataset,
    encoder: str | Path | Encoder = "minilm",
    template: str | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 64,
    use_cache: bool = True,
    progress: bool = True,
    root: str | Path | None = None,
) -> ItemEmbeddings:
    """Embed every item's text once; later calls with the same inputs load the cached table."""
    t0 = time.perf_counter()
    template = template or default_template(ds)
    texts = render_texts(ds, template)
    ids = [str(i) for i in ds.item_ids[1:]]
    text_hash = sha256_text(*ids, "\x1e", *texts)
    enc = encoder if not isinstance(encoder, str | Path) else None
    if enc is not None:
        enc_name, revision = enc.name, enc.revision
    else:
        folder_ = minilm_path() if str(encoder) == "minilm" else Path(encoder).expanduser()
        if not folder_.is_dir():
            load_encoder(encoder)  # raises the clear "no such model folder" error
        enc_name, revision = str(encoder) if str(encoder) == "minilm" else folder_.name, _weights_hash(folder_)
    folder = Path(root) if root else cache_dir() / "embeddings"
    key_base = sha256_text(enc_name, revision, template, text_hash, pooling)[:20]
    path = folder / f"{ds.name}-{key_base}.npy"
    manifest_path = path.with_suffix(".json")
    if use_cache and path.exists() and manifest_path.exists():
        vectors = np.load(path, allow_pickle=False)
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("text_sha256") == text_hash and vectors.shape[0] == len(texts) + 1:
            return ItemEmbeddings(vectors, manifest, path, True, time.perf_counter() - t0)
    enc = enc or load_encoder(encoder, pooling=pooling)
    body = enc.encode(texts, batch_size=batch_size, progress=progress)
    if not np.isfinite(body).all():
        raise ValueError(f"encoder {enc.name} produced NaN/inf vectors")
    vectors = np.zeros((len(texts) + 1, body.shape[1]), dtype=np.float32)
    vectors[1:] = body
    manifest = {
        "dataset": ds.name,
        "encoder": enc.name,
        "revision": enc.revision,
        "dim": int(body.shape[1]),
        "template": template,
        "pooling": pooling,
        "rows": len(texts) + 1,
        "text_sha256": text_hash,
        "fallback_texts": sum(
            t.startswith("item ") and t == FALLBACK.format(item_id=i) for t, i in zip(texts, ids, strict=True)
        ),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return ItemEmbeddings(vectors, manifest, path, False, time.perf_counter() - t0)


def embed_texts(texts: list[str], encoder: str | Path | Encoder = "minilm", pooling: Pooling = "mean") -> np.ndarray:
    """Vectors for free texts (e.g. items added after training), with the same encoder as a run."""
    enc = encoder if not isinstance(encoder, str | Path) else load_encoder(encoder, pooling=pooling)
    clean = [t.strip() or "item" for t in texts]
    return enc.encode(clean)
