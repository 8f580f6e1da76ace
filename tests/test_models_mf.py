"""BPR-MF and NCF: the fast all-items scoring path, save/load, user-id scoring."""

from __future__ import annotations

import pytest
import torch
from test_models_seq import _toy_split

from padrec.models import Recommender, get_model_class
from padrec.models.mf import NCFNet


@pytest.mark.parametrize("mlp", [(16, 8), ()])
def test_ncf_all_items_path_equals_pairwise_scoring(mlp):
    torch.manual_seed(0)
    net = NCFNet(n_users=7, n_items=30, d=8, mlp=mlp, dropout=0.3).eval()
    u = torch.tensor([1, 4, 6])
    gu, mu = net.gmf_u(u), net.mlp_u(u)
    items = torch.arange(31).expand(3, -1)
    with torch.no_grad():
        assert torch.allclose(net.score_all(gu, mu), net.score_vecs(gu, mu, items), atol=1e-5)


@pytest.mark.parametrize("name", ["bpr", "ncf"])
def test_fit_save_load_gives_identical_scores(name, tmp_path):
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
