"""Sequential models on synthetic data: masks, shapes, save/load, config strictness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from padrec.data.dataset import from_sequences
from padrec.data.split import leave_one_out
from padrec.models import Recommender, get_model_class
from padrec.models.layers import TransformerEncoder
from padrec.train.config import ConfigError, TrainConfig, parse_overrides, resolve


def _toy_split(n_users: int = 40, n_items: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    seqs = [[f"i{x}" for x in rng.integers(0, n_items, size=rng.integers(4, 12))] for _ in range(n_users)]
    return leave_one_out(from_sequences("toy", [f"u{u}" for u in range(n_users)], seqs))


def test_causal_mask_later_items_never_change_earlier_outputs():
    torch.manual_seed(0)
    enc = TransformerEncoder(d=16, n_layers=2, n_heads=2, max_len=10, dropout=0.0).eval()
    x = torch.randn(3, 10, 16)
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[0, :4] = True  # a left-padded row
    out1 = enc(x, pad)
    x2 = x.clone()
    x2[:, 7:] = torch.randn(3, 3, 16)  # change the last three positions
    out2 = enc(x2, pad)
    assert torch.allclose(out1[:, :7], out2[:, :7], atol=1e-6)
    assert not torch.allclose(out1[:, 7:], out2[:, 7:])
    assert torch.isfinite(out1).all()


def test_bidirectional_encoder_does_see_the_future():
    torch.manual_seed(0)
    enc = TransformerEncoder(d=16, n_layers=1, n_heads=2, max_len=8, dropout=0.0, causal=False).eval()
    x = torch.randn(1, 8, 16)
    pad = torch.zeros(1, 8, dtype=torch.bool)
    x2 = x.clone()
    x2[:, -1] = torch.randn(1, 16)
    assert not torch.allclose(enc(x, pad)[:, 0], enc(x2, pad)[:, 0])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("layers", "heads"), [(1, 1), (2, 2), (3, 1)])
def test_last_position_shortcut_equals_the_full_encoder(causal, layers, heads):
    """``last`` skips the last layer's other positions; the next-item query must not change."""
    torch.manual_seed(0)
    enc = TransformerEncoder(16, layers, heads, max_len=12, causal=causal).eval()
    pad = torch.zeros(4, 10, dtype=torch.bool)
    pad[0, :7] = True  # short history
    pad[1, :] = True  # no history at all: must stay defined, as in forward
    x = torch.randn(4, 10, 16) * (~pad).unsqueeze(-1)
    with torch.no_grad():
        full, last = enc(x, pad)[:, -1], enc.last(x, pad)
    assert last.shape == (4, 16)
    assert torch.isfinite(last).all()
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-5)
    x2 = x.clone()
    x2[2, :5] = torch.randn(5, 16) * 3  # earlier items change the query (the shortcut still reads every position)
    with torch.no_grad():
        assert not torch.allclose(enc.last(x2, pad)[2], last[2])


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "bert4rec", "caser"])
def test_fit_save_load_gives_identical_scores(name, tmp_path):
    split = _toy_split()
    cls = get_model_class(name)
    rec = cls(params={"d": 16, "max_len": 12}, train={"max_epochs": 2, "batch_size": 16, "progress": False})
    rec.fit(split, run_dir=tmp_path / "run")
    hist = split.histories("test")[:5]
    before = rec.score(hist)
    assert before.shape == (5, split.n_items + 1)
    assert torch.isfinite(before[:, 1:]).all()
    loaded = Recommender.load(tmp_path / "run")
    assert type(loaded) is cls
    assert torch.equal(loaded.score(hist), before)
    # the checkpoint is a plain state dict
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_concurrent_scoring_of_a_loaded_model_is_deterministic(tmp_path):
    """Serving scores from many threads: a loaded model stays in eval mode (dropout off) throughout."""
    from concurrent.futures import ThreadPoolExecutor

    split = _toy_split()
    rec = get_model_class("sasrec")(
        params={"d": 16, "max_len": 12, "dropout": 0.5}, train={"max_epochs": 1, "batch_size": 16, "progress": False}
    )
    rec.fit(split, run_dir=tmp_path)
    assert not rec.net.training
    loaded = Recommender.load(tmp_path)
    assert not loaded.net.training
    hist = split.histories("test")[:8]
    ref = loaded.score(hist)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: loaded.score(hist), range(32)))
    assert all(torch.equal(o, ref) for o in outs)
    loaded.net.train()  # a net left in training mode is scored in eval mode and put back
    assert torch.equal(loaded.score(hist), ref) and loaded.net.training


def test_recommend_uses_external_ids_and_rejects_unknown(tmp_path):
    split = _toy_split()
    rec = get_model_class("sasrec")(
        params={"d": 16, "max_len": 12}, train={"max_epochs": 1, "batch_size": 16, "progress": False}
    )
    rec.fit(split, run_dir=tmp_path)
    hist = split.dataset.to_external(split.histories("test")[0])
    out = rec.recommend([hist], k=5)[0]
    assert len(out) == 5 and all(r["item_id"] not in hist for r in out)
    assert [r["score"] for r in out] == sorted((r["score"] for r in out), reverse=True)
    with pytest.raises(KeyError, match="nope1, nope2"):
        rec.recommend([["nope1", hist[0], "nope2"]], k=5)


def test_config_rejects_unknown_keys_and_resolves_sections():
    cls = get_model_class("sasrec").config_cls
    params, train = resolve("sasrec", cls, "amazon-beauty", parse_overrides(["lr=0.002", "model.d=32"]))
    assert params.d == 32 and train.lr == 0.002
    assert params.max_len == 50  # from the dataset YAML
    with pytest.raises(ConfigError, match="unknown config key 'hiden'"):
        resolve("sasrec", cls, None, {"hiden": 3})
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])
    with pytest.raises(ValueError, match="los"):
        TrainConfig(los="ce")
