"""Item text embeddings, computed once and cached under a key of everything that changes them.

Cache entry = ``<dataset>-<key>.npy`` (float32 ``[n_items + 1, D]``, row 0 = padding = zeros) plus
``<dataset>-<key>.json`` (the manifest). The key hashes the encoder's name, a hash of its weight files,
its output-changing settings (pooling, dtype, max length), the template, the fallback and a sha256 of
every (external id, text) pair: change any of them and the table is recomputed, never served stale.
The ``.npy`` is written first and the manifest last, each atomically, so an entry whose manifest
exists is complete. Default folder: ``padrec.data.paths.cache_dir() / "embeddings"``.

Sharding (many processes or GPUs): shard ``i`` of ``n`` encodes a contiguous slice of the items and
writes ``<entry>.shard-i-of-n.npy``; merging concatenates them into the ordinary cache entry. Launch
it like a Lightning/torchrun job, every process running the same command::

    torchrun --nproc-per-node 4 --no-python padrec embed --dataset ml-1m --encoder /models/llm --shards auto

``shards="auto"`` reads the rank and world size from the launcher's environment (``RANK``/``WORLD_SIZE``
from torchrun, ``LOCAL_RANK``/``NODE_RANK``/``WORLD_SIZE`` from Lightning's launcher, ``SLURM_PROCID``/
``SLURM_NTASKS`` under ``srun``); each process uses ``cuda:LOCAL_RANK``; rank 0 merges once every shard
file is there and the others wait for the merged table (ranks meet through files, so the cache folder
must be shared: one node, or a shared file system). Without a launcher, run
``padrec embed ... --shards 4 --shard-index I`` as four independent jobs and ``--shards 4 --merge`` after.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from padrec.data.dataset import SeqDataset
from padrec.text.encoders import MINILM, Encoder, EncoderSpec, Pooling, resolve_encoder
from padrec.text.templates import FALLBACK, default_template, render
from padrec.utils import atomic_path, atomic_write_text, sha256_text

FORMAT = 1


@dataclass
class ItemEmbeddings:
    """One vector per internal item id; ``vectors[0]`` (padding) is zero."""

    vectors: np.ndarray  # float32 [n_items + 1, D]
    manifest: dict[str, Any]
    path: Path
    from_cache: bool
    seconds: float

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def n_items(self) -> int:
        return int(self.vectors.shape[0]) - 1


@dataclass(frozen=True)
class ShardResult:
    """What one shard wrote: rows ``lo..hi`` (0-based over items 1..n) of the final table."""

    path: Path
    index: int
    shards: int
    lo: int
    hi: int
    from_cache: bool
    seconds: float


@dataclass
class _Plan:
    """Everything known before encoding: texts, the encoder's identity, the cache key and paths."""

    dataset: str
    ids: list[str]
    texts: list[str]
    fallback_mask: np.ndarray
    encoder: Encoder | EncoderSpec
    template: str
    fallback: str
    text_sha256: str
    key: str
    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path.with_suffix(".json")

    def shard_path(self, index: int, shards: int) -> Path:
        return self.path.with_name(f"{self.path.stem}.shard-{index}-of-{shards}.npy")

    def identity(self) -> dict[str, Any]:
        enc = self.encoder
        spec_path = getattr(enc, "path", None)
        return {
            "format": FORMAT,
            "key": self.key,
            "dataset": self.dataset,
            "encoder": enc.name,
            "encoder_path": str(spec_path) if spec_path is not None else None,
            "revision": enc.revision,
            "settings": dict(getattr(enc, "settings", {}) or {}),
            "template": self.template,
            "fallback": self.fallback,
            "text_sha256": self.text_sha256,
            "rows": len(self.texts) + 1,
            "fallback_texts": int(self.fallback_mask.sum()),
            "fallback_items": [i for i, m in zip(self.ids, self.fallback_mask, strict=True) if m][:20],
        }


def _plan(
    ds: SeqDataset,
    encoder: str | Path | Encoder | EncoderSpec,
    template: str | None,
    fallback: str,
    pooling: Pooling,
    dtype: str,
    device: str,
    max_length: int | None,
    root: str | Path | None,
) -> _Plan:
    template = template or default_template(ds)
    texts, mask = render(ds, template, fallback)
    ids = [str(i) for i in ds.item_ids[1:]]
    text_sha = sha256_text(*(f"{i}\t{t}" for i, t in zip(ids, texts, strict=True)))
    if isinstance(encoder, Encoder | EncoderSpec):
        enc: Encoder | EncoderSpec = encoder
    else:
        enc = resolve_encoder(encoder, pooling, dtype, device, max_length)
    settings = json.dumps(getattr(enc, "settings", {}) or {}, sort_keys=True)
    key = sha256_text(str(FORMAT), enc.name, enc.revision, settings, template, fallback, text_sha)[:24]
    folder = Path(root) if root is not None else _default_root()
    path = folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', ds.name)}-{key}.npy"
    return _Plan(ds.name, ids, texts, mask, enc, template, fallback, text_sha, key, path)


def _default_root() -> Path:
    from padrec.data.paths import cache_dir

    return cache_dir() / "embeddings"


def _loaded(plan: _Plan) -> Encoder:
    if isinstance(plan.encoder, EncoderSpec):
        plan.encoder = plan.encoder.load()
    return plan.encoder


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _read_entry(plan: _Plan) -> tuple[np.ndarray, dict] | None:
    """The cached table if its manifest matches this plan exactly and the file is sound."""
    try:
        manifest = json.loads(plan.manifest_path.read_text())
        if manifest.get("key") != plan.key or manifest.get("text_sha256") != plan.text_sha256:
            return None
        vectors = np.load(plan.path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if vectors.dtype != np.float32 or vectors.shape != (len(plan.texts) + 1, manifest.get("dim")):
        return None
    return vectors, manifest


def _finish(plan: _Plan, body: np.ndarray, seconds: float, extra: dict | None = None) -> tuple[np.ndarray, dict]:
    if body.shape[0] != len(plan.texts) or not np.isfinite(body).all():
        bad = int((~np.isfinite(body)).any(1).sum()) if body.shape[0] == len(plan.texts) else body.shape[0]
        raise ValueError(f"encoder {plan.encoder.name} returned {bad} bad rows (NaN/inf or wrong count)")
    vectors = np.zeros((len(plan.texts) + 1, body.shape[1]), dtype=np.float32)
    vectors[1:] = body
    manifest = {
        **plan.identity(),
        "dim": int(body.shape[1]),
        "encode_seconds": round(seconds, 3),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    _save_npy(plan.path, vectors)
    atomic_write_text(plan.manifest_path, json.dumps(manifest, indent=2))
    return vectors, manifest


def embed_items(
    ds: SeqDataset,
    encoder: str | Path | Encoder = MINILM,
    template: str | None = None,
    *,
    fallback: str = FALLBACK,
    pooling: Pooling = "mean",
    dtype: str = "float32",
    device: str = "auto",
    max_length: int | None = None,
    batch_size: int = 64,
    cache: bool = True,
    root: str | Path | None = None,
    progress: bool = True,
    shards: int | Literal["auto"] = 1,
    shard_index: int | None = None,
    wait_timeout: float = 24 * 3600,
) -> ItemEmbeddings:
    """Embed every item's text, or load the cached table when nothing that matters changed.

    ``encoder``: ``"minilm"``, a model folder, or an :class:`Encoder` object. ``template``: a format
    string over item-table columns (default per dataset, see :mod:`padrec.text.templates`).
    ``cache=False`` recomputes (and refreshes the entry). ``shards``/``shard_index``: see the module
    docstring; ``shards=n`` without an index (and no launcher) encodes the n shards in turn.
    """
    t0 = time.perf_counter()
    plan = _plan(ds, encoder, template, fallback, pooling, dtype, device, max_length, root)
    if cache and (hit := _read_entry(plan)) is not None:
        return ItemEmbeddings(hit[0], hit[1], plan.path, True, time.perf_counter() - t0)
    n, index = launcher_shards() if shards == "auto" else (int(shards), shard_index)
    if n < 1 or (index is not None and not 0 <= index < n):
        raise ValueError(f"bad sharding: shard_index {index} of {n} shards")
    if n == 1:
        body = _loaded(plan).encode(plan.texts, batch_size=batch_size, progress=progress)
        vectors, manifest = _finish(plan, np.asarray(body, dtype=np.float32), time.perf_counter() - t0)
        return ItemEmbeddings(vectors, manifest, plan.path, False, time.perf_counter() - t0)
    if index is None:  # no launcher: every shard here, in turn (resumes from shard files already written)
        for i in range(n):
            _encode_shard(plan, n, i, batch_size, progress, cache)
        return _merge(plan, n, t0)
    _encode_shard(plan, n, index, batch_size, progress, cache)
    _barrier(plan, n, wait_timeout, wait_for="shards" if index == 0 else "entry")
    if index == 0:
        return _merge(plan, n, t0)
    hit = _read_entry(plan)
    if hit is None:
        raise RuntimeError(f"rank {index}: merged embeddings {plan.path} are missing or do not match")
    return ItemEmbeddings(hit[0], hit[1], plan.path, False, time.perf_counter() - t0)


def shard_bounds(n_items: int, shards: int, index: int) -> tuple[int, int]:
    """Contiguous, balanced slice ``[lo, hi)`` of ``n_items`` for shard ``index`` of ``shards``."""
    return index * n_items // shards, (index + 1) * n_items // shards


def launcher_shards() -> tuple[int, int | None]:
    """``(world_size, rank)`` from torchrun, Lightning's launcher or SLURM; ``(1, None)`` outside one."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["WORLD_SIZE"]), int(env["RANK"])
    if "WORLD_SIZE" in env and "LOCAL_RANK" in env:  # Lightning's subprocess launcher
        world = int(env["WORLD_SIZE"])
        per_node = int(env.get("LOCAL_WORLD_SIZE", world))
        return world, int(env.get("NODE_RANK", 0)) * per_node + int(env["LOCAL_RANK"])
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        return int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"])
    return 1, None


def _shard_manifest(plan: _Plan, shards: int, index: int) -> dict:
    lo, hi = shard_bounds(len(plan.texts), shards, index)
    return {"key": plan.key, "shards": shards, "index": index, "lo": lo, "hi": hi}


def _read_shard(plan: _Plan, shards: int, index: int) -> np.ndarray | None:
    path = plan.shard_path(index, shards)
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta.get("shard") != _shard_manifest(plan, shards, index):
            return None
        body = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    lo, hi = shard_bounds(len(plan.texts), shards, index)
    return body if body.shape[0] == hi - lo and body.dtype == np.float32 else None


def _encode_shard(plan: _Plan, shards: int, index: int, batch_size: int, progress: bool, cache: bool) -> ShardResult:
    t0 = time.perf_counter()
    path = plan.shard_path(index, shards)
    lo, hi = shard_bounds(len(plan.texts), shards, index)
    if cache and _read_shard(plan, shards, index) is not None:
        return ShardResult(path, index, shards, lo, hi, True, time.perf_counter() - t0)
    body = np.asarray(
        _loaded(plan).encode(plan.texts[lo:hi], batch_size=batch_size, progress=progress), dtype=np.float32
    )
    if body.shape[0] != hi - lo or not np.isfinite(body).all():
        raise ValueError(f"encoder {plan.encoder.name}: shard {index} has NaN/inf or a wrong row count")
    _save_npy(path, body)
    meta = {"shard": _shard_manifest(plan, shards, index), "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return ShardResult(path, index, shards, lo, hi, False, time.perf_counter() - t0)


def _merge(plan: _Plan, shards: int, t0: float) -> ItemEmbeddings:
    parts = [_read_shard(plan, shards, i) for i in range(shards)]
    missing = [i for i, p in enumerate(parts) if p is None]
    if missing:
        raise FileNotFoundError(
            f"cannot merge {plan.path.name}: shard(s) {', '.join(map(str, missing))} of {shards} are missing or "
            f"stale in {plan.path.parent} (run `padrec embed ... --shards {shards} --shard-index I` for each)"
        )
    encode_seconds = sum(
        json.loads(plan.shard_path(i, shards).with_suffix(".json").read_text()).get("seconds", 0.0)
        for i in range(shards)
    )
    vectors, manifest = _finish(plan, np.concatenate(parts), encode_seconds, {"merged_shards": shards})
    for i in range(shards):
        for p in (plan.shard_path(i, shards), plan.shard_path(i, shards).with_suffix(".json")):
            p.unlink(missing_ok=True)
    return ItemEmbeddings(vectors, manifest, plan.path, False, time.perf_counter() - t0)


def _barrier(plan: _Plan, shards: int, timeout: float, wait_for: Literal["shards", "entry"]) -> None:
    """Rank 0 waits for every shard file, the others for the merged entry (files work on any launcher)."""
    deadline = time.monotonic() + timeout
    while True:
        if wait_for == "shards":
            if all(_read_shard(plan, shards, i) is not None for i in range(shards)):
                return
        elif _read_entry(plan) is not None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for the {wait_for} of {plan.path} from the other ranks")
        time.sleep(1.0)


def embed_shard(
    ds: SeqDataset,
    encoder: str | Path | Encoder = MINILM,
    template: str | None = None,
    *,
    shards: int,
    shard_index: int,
    fallback: str = FALLBACK,
    pooling: Pooling = "mean",
    dtype: str = "float32",
    device: str = "auto",
    max_length: int | None = None,
    batch_size: int = 64,
    cache: bool = True,
    root: str | Path | None = None,
    progress: bool = True,
) -> ShardResult:
    """Encode one shard and return at once (no waiting); :func:`merge_shards` assembles the table later."""
    if not 0 <= shard_index < shards:
        raise ValueError(f"bad sharding: shard_index {shard_index} of {shards} shards")
    plan = _plan(ds, encoder, template, fallback, pooling, dtype, device, max_length, root)
    return _encode_shard(plan, shards, shard_index, batch_size, progress, cache)


def merge_shards(
    ds: SeqDataset,
    encoder: str | Path | Encoder = MINILM,
    template: str | None = None,
    *,
    shards: int,
    fallback: str = FALLBACK,
    pooling: Pooling = "mean",
    dtype: str = "float32",
    max_length: int | None = None,
    root: str | Path | None = None,
) -> ItemEmbeddings:
    """Assemble the shard files of the same settings into the cache entry; names any missing shard."""
    t0 = time.perf_counter()
    plan = _plan(ds, encoder, template, fallback, pooling, dtype, "cpu", max_length, root)
    if (hit := _read_entry(plan)) is not None:
        return ItemEmbeddings(hit[0], hit[1], plan.path, True, time.perf_counter() - t0)
    return _merge(plan, shards, t0)


_ENCODERS: dict[tuple, Encoder] = {}


def embed_texts(
    texts: list[str],
    encoder: str | Path | Encoder = MINILM,
    pooling: Pooling = "mean",
    dtype: str = "float32",
    device: str = "auto",
    batch_size: int = 64,
) -> np.ndarray:
    """Vectors for free texts (e.g. items added after training); an encoder given by name is loaded once."""
    if not isinstance(encoder, Encoder):
        spec = resolve_encoder(encoder, pooling, dtype, device)
        ident = (str(spec.path), spec.kind, pooling, dtype, device)
        if ident not in _ENCODERS:
            _ENCODERS[ident] = spec.load()
        encoder = _ENCODERS[ident]
    clean = [str(t).strip() or "item" for t in texts]
    return np.asarray(encoder.encode(clean, batch_size=batch_size), dtype=np.float32)
