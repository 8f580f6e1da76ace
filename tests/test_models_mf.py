"""BPR-MF and NCF: the fast all-items scoring path, save/load, user-id scoring."""

from __future__ import annotations

import pytest
import torch
from test_models_seq import _toy_split

from padrec.models import Recommender, get_model_class
from padrec.models.losses import sampled_loss
from padrec.models.mf import NCFNet
from padrec.train.config import ConfigError, resolve


@pytest.mark.parametrize("mlp", [(16, 8, 4), (16,), ()])
def test_ncf_all_items_path_equals_pairwise_scoring(mlp):
    torch.manual_seed(0)
    net = NCFNet(n_users=7, n_items=30, d=8, mlp=mlp, dropout=0.3).eval()
    u = torch.tensor([1, 4, 6])
    gu, mu = net.gmf_u(u), net.mlp_u(u)
    items = torch.arange(31).expand(3, -1)
    with torch.no_grad():
        assert torch.allclose(net.score_all(gu, mu), net.score_vecs(gu, mu, items), atol=1e-5)


@pytest.mark.parametrize("name", ["bpr", "ncf"])
def test_fit_save_load_gives_identical_scores(name, tmp_path, monkeypatch):
    split = _toy_split()
    rec = get_model_class(name)(params={"d": 8}, train={"max_epochs": 2, "batch_size": 64, "progress": False})
    rec.fit(split, run_dir=tmp_path)
    hist = split.histories("test")[:5]
    users = split.users("test")[:5]
    loaded = Recommender.load(tmp_path)
    for model in (rec, loaded):
        assert not model.net.training
    a, b = rec.score(hist, users=users), loaded.score(hist, users=users)
    assert a.shape == (5, split.n_items + 1) and torch.isfinite(a[:, 1:]).all()
    assert torch.equal(a, b)
    monkeypatch.setattr("padrec.models.mf.SCORE_PAIRS", 2 * (split.n_items + 1))  # NCF: 2 users per chunk
    assert torch.allclose(rec.score(hist, users=users), a, atol=1e-6)


def test_sampled_losses_match_hand_computed_values():
    pos, neg = torch.tensor([2.0]), torch.tensor([[1.0, 3.0]])
    sp = torch.nn.functional.softplus
    bpr = (sp(torch.tensor(-1.0)) + sp(torch.tensor(1.0))) / 2  # -log sigmoid(2-1), -log sigmoid(2-3)
    bce = sp(torch.tensor(-2.0)) + sp(torch.tensor(1.0)) + sp(torch.tensor(3.0))
    assert torch.isclose(sampled_loss(pos, neg, "bpr"), bpr)
    assert torch.isclose(sampled_loss(pos, neg, "bce"), bce)
    full = -torch.log_softmax(torch.tensor([2.0, 1.0, 3.0]), 0)[0]
    assert torch.isclose(sampled_loss(pos, neg, "sampled_softmax"), full)
    # a negative equal to the target is dropped from the softmax
    dropped = sampled_loss(pos, neg, "sampled_softmax", torch.tensor([[False, True]]))
    assert torch.isclose(dropped, sp(torch.tensor(-1.0)))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        sampled_loss(pos, neg, "hinge")


@pytest.mark.parametrize(
    ("name", "loss"),
    [("bpr", "bce"), ("bpr", "sampled_softmax"), ("bpr", "ce"), ("ncf", "bce"), ("ncf", "sampled_softmax")],
)
def test_each_loss_trains_and_is_saved(name, loss, tmp_path):
    train = {"max_epochs": 1, "batch_size": 64, "progress": False, "loss": loss, "n_negatives": 3}
    rec = get_model_class(name)(params={"d": 8}, train=train).fit(_toy_split(), run_dir=tmp_path)
    value, n = rec.training_loss((torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])))
    assert n == 3 and torch.isfinite(value) and value > 0
    assert Recommender.load(tmp_path).train_cfg.loss == loss


def test_losses_default_to_bpr_and_ncf_rejects_full_cross_entropy(tmp_path):
    assert get_model_class("bpr")().train_cfg.loss == "bpr"
    _, train = resolve("ncf", get_model_class("ncf").config_cls, "ml-1m", {})
    assert train.loss == "bpr"
    assert resolve("ncf", get_model_class("ncf").config_cls, "amazon-beauty", {})[1].loss == "bce"  # dataset YAML
    ncf = get_model_class("ncf")(params={"d": 8}, train={"loss": "ce", "progress": False})
    with pytest.raises(ConfigError, match=r"train.loss='ce' is not available for ncf: expected one of bpr, bce"):
        ncf.fit(_toy_split(), run_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # rejected before anything was written
