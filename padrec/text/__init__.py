"""Item text → vectors: templates, offline encoders, and a cache keyed by everything that matters."""

from padrec.text.embed import FALLBACK, TEMPLATES, ItemEmbeddings, embed_items, embed_texts, render_texts
from padrec.text.encoders import load_encoder

__all__ = ["FALLBACK", "TEMPLATES", "ItemEmbeddings", "embed_items", "embed_texts", "load_encoder", "render_texts"]
