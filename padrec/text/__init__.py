"""Item text → vectors: templates, offline encoders, a cache that is never stale, and concordance analysis.

Names load on first use (PEP 562), so ``import padrec.text.cli`` from the command line costs nothing;
sentence-transformers, transformers and matplotlib load only when an encoder or a plot is needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from padrec.text.analysis import concordance, plot_concordance, run_concordance
    from padrec.text.embed import ItemEmbeddings, ShardResult, embed_items, embed_shard, embed_texts, merge_shards
    from padrec.text.encoders import Encoder, EncoderSpec, load_encoder, resolve_encoder
    from padrec.text.templates import FALLBACK, TEMPLATES, default_template, render_texts

_WHERE = {
    "concordance": "analysis",
    "plot_concordance": "analysis",
    "run_concordance": "analysis",
    "ItemEmbeddings": "embed",
    "ShardResult": "embed",
    "embed_items": "embed",
    "embed_shard": "embed",
    "embed_texts": "embed",
    "merge_shards": "embed",
    "Encoder": "encoders",
    "EncoderSpec": "encoders",
    "load_encoder": "encoders",
    "resolve_encoder": "encoders",
    "FALLBACK": "templates",
    "TEMPLATES": "templates",
    "default_template": "templates",
    "render_texts": "templates",
}
__all__ = [
    "FALLBACK",
    "TEMPLATES",
    "Encoder",
    "EncoderSpec",
    "ItemEmbeddings",
    "ShardResult",
    "concordance",
    "default_template",
    "embed_items",
    "embed_shard",
    "embed_texts",
    "load_encoder",
    "merge_shards",
    "plot_concordance",
    "render_texts",
    "resolve_encoder",
    "run_concordance",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'padrec.text' has no attribute {name!r}")
    value = getattr(import_module(f"padrec.text.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
