"""PAD stages on a small synthetic dataset with a text table that carries real signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from padrec.data.dataset import from_sequences
from padrec.data.split import leave_one_out
from padrec.models import Recommender
from padrec.pad.model import gate_init
from padrec.pad.pipeline import comparison_table, run_pad

FAST = {
    "backbone.d": 16,
    "backbone.max_len": 10,
    "backbone.n_layers": 1,
    "backbone.max_epochs": 15,
    "backbone.lr": 0.01,
    "backbone.progress": False,
    "max_epochs": 15,
    "lr": 0.01,
    "progress": False,
    "batch_size": 32,
}


@pytest.fixture(scope="module")
def toy():
    """Users walk through item clusters; the 'text' of an item is its cluster centre plus noise."""
    rng = np.random.default_rng(0)
    n_items, n_clusters = 60, 6
    cluster = np.arange(n_items) % n_clusters
    seqs = []
    for _ in range(80):
        c = rng.integers(n_clusters)
        items = rng.choice(np.flatnonzero(cluster == c), size=rng.integers(5, 10))
        seqs.append([f"i{i}" for i in items])
    split = leave_one_out(from_sequences("toy", [f"u{u}" for u in range(80)], seqs))
    centres = rng.normal(size=(n_clusters, 8))
    ext = split.dataset.item_ids[1:]
    text = np.zeros((split.n_items + 1, 8), dtype=np.float32)
    for i, e in enumerate(ext, 1):
        text[i] = centres[int(e[1:]) % n_clusters] + 0.1 * rng.normal(size=8)
    return split, text


@pytest.fixture(scope="module")
def pad_run(toy, tmp_path_factory):
    split, text = toy
    return run_pad(split, tmp_path_factory.mktemp("pad"), overrides=FAST, text=text)


def test_gate_initialisation_orders_experts_by_popularity(pad_run):
    net = pad_run.pad.net
    init = gate_init(10)
    assert torch.allclose(init["collab"], torch.linspace(1, 0, 10))
    assert init["aligned"][0] == -4 and init["aligned"][-1] == -5
    w = torch.sigmoid(torch.stack([init[k] for k in net.names]))
    w = w / w.sum(0)
    c, a, t = (w[net.names.index(k)] for k in ("collab", "aligned", "text"))
    # by hand: sigmoid(1), sigmoid(0), sigmoid(-4) = .7311, .5, .0180 -> .7311 / 1.2491
    assert c[0].item() == pytest.approx(0.5853, abs=1e-4) and t[0].item() == pytest.approx(0.4003, abs=1e-4)
    assert c[0] > t[0] and t[-1] > c[-1] and (a < 0.015).all() and (a[1:] < a[:-1]).all()
    assert torch.allclose(w.sum(0), torch.ones(10))


def test_fused_score_is_the_gated_sum_of_expert_scores(pad_run, toy):
    split, _ = toy
    rec = pad_run.pad
    seqs = rec.query(split.histories("test")[:4])
    rec.net.eval()
    with torch.no_grad():
        fused = rec.net.score(seqs)
        parts = rec.net.expert_scores(seqs)
        w = rec.net.item_weights()
    manual = sum(w[k] * parts[k] for k in range(len(parts)))
    assert torch.allclose(fused, manual, atol=1e-5)
    # serving uses one cached gate-weighted table; the training path must agree with it
    assert rec.net._serving is not None
    assert torch.allclose(rec.net.score(seqs).detach(), fused, atol=1e-5)
    assert w.shape == (3, split.n_items + 1)


def test_pad_saves_and_loads_identically(pad_run, toy):
    split, _ = toy
    loaded = Recommender.load(pad_run.run_dir / "pad")
    hist = split.histories("test")[:5]
    assert torch.allclose(loaded.score(hist), pad_run.pad.score(hist))
    assert loaded.net.gates.shape == (3, 10)


def test_rerun_skips_finished_stages(pad_run, toy):
    split, _ = toy
    again = run_pad(split, pad_run.run_dir, overrides=FAST, evaluate=False)
    assert again.skipped == ["pretrain", "embed", "align", "pad"]


def test_table_has_backbone_aligned_and_pad(pad_run):
    table = comparison_table(pad_run.results)
    assert "sasrec NDCG@10" in table and "pad-sasrec NDCG@10" in table and "aligned HR@10" in table
    assert "cold" in table and "bin1" in table
    # absolute training-count groups follow the relative bins, with their user counts
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:] if line.split()}
    freq = [g for g in rows if g.startswith("freq")]
    assert freq and list(rows).index(freq[0]) > list(rows).index("bin1")
    res = next(iter(pad_run.results.values()))
    assert all(int(rows[g][1]) == int(res.groups[g]["users"]) for g in freq)


def test_pipeline_plots_every_bin_and_plot_rejects_empty_input(pad_run, tmp_path):
    from padrec.eval.plots import plot_groups

    png = (pad_run.run_dir / "bins.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    with pytest.raises(ValueError, match="at least one series"):
        plot_groups({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one group"):
        plot_groups({"a": {}}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_new_item_with_text_gets_a_finite_score_and_can_enter_the_top_k(pad_run, toy, tmp_path):
    split, text = toy
    rec = Recommender.load(pad_run.run_dir / "pad")
    n_before = rec.n_items
    hist_int = split.histories("test")[0]
    hist = split.dataset.to_external(hist_int)
    # two brand-new items: one with the text of the user's own cluster, one with another cluster's text
    other = next(
        i
        for i in range(1, split.n_items + 1)
        if int(split.dataset.item_ids[i][1:]) % 6 != int(split.dataset.item_ids[hist_int[-1]][1:]) % 6
    )
    vec = np.stack([text[hist_int[-1]], text[other]])
    assert rec.add_item_vectors(["new-match", "new-other"], vec, ["A new thing", "Another"]) == 2
    assert rec.n_items == n_before + 2
    scores = rec.score([hist_int])
    assert scores.shape == (1, n_before + 3) and torch.isfinite(scores[0, -2:]).all()
    assert scores[0, -2] > scores[0, -1]  # text, not the id, decides where a new item lands
    best = rec.recommend([hist], k=10)[0]
    assert "new-match" in [r["item_id"] for r in best], best
    # it survives save/load
    rec.save(tmp_path / "grown")
    again = Recommender.load(tmp_path / "grown")
    assert torch.allclose(again.score([hist_int]), scores)


def test_concordance_before_and_after_alignment_is_recorded(pad_run):
    import json

    c = json.loads((pad_run.run_dir / "concordance.json").read_text())
    for when in ("before", "after"):
        assert 0.0 <= c[when]["overlap_at_k"] <= 1.0
    assert c["items"] > 10
    curve = c["curve"]
    k10 = curve["k"].index(10)
    assert curve["before"][k10] == c["before"]["overlap_at_k"] and curve["after"][k10] == c["after"]["overlap_at_k"]
    assert curve["random"][k10] == pytest.approx(10 / (c["items"] - 1))
    assert all(len(curve[key]) == len(curve["k"]) for key in ("before", "after", "random"))
    png = (pad_run.run_dir / "concordance.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_bert4rec_pad_adds_items_before_its_mask_row(toy, tmp_path):
    """BERT4Rec's mask token sits after the items: new rows go in before it, existing scores stay put."""
    split, text = toy
    fast = {**FAST, "backbone.max_epochs": 2, "max_epochs": 2}
    out = run_pad(split, tmp_path / "bert", backbone="bert4rec", overrides=fast, text=text, evaluate=False)
    rec = Recommender.load(tmp_path / "bert" / "pad")
    hist = split.histories("test")[:3]
    before = rec.score(hist)
    mask_before = rec.net.mask_id
    assert rec.add_item_vectors(["new-a", "new-b"], text[[1, 2]], ["A", "B"]) == 2
    after = rec.score(hist)
    assert rec.net.mask_id == mask_before + 2 == rec.n_items + 1
    assert all(e.mask_id == rec.net.mask_id for e in rec.net.experts.values())
    assert after.shape == (3, split.n_items + 3) and torch.isfinite(after[:, -2:]).all()
    assert torch.allclose(after[:, : split.n_items + 1], before, atol=1e-5)
    rec.save(tmp_path / "grown")
    assert torch.allclose(Recommender.load(tmp_path / "grown").score(hist), after, atol=1e-6)
    assert out.pad is not None


def test_half_finished_pipeline_reuses_finished_stages_and_runs_the_rest(pad_run, toy, tmp_path):
    """A run interrupted after stage 2: the rerun loads pretrain/embed/align and trains only stage 3."""
    import shutil

    split, _ = toy
    half = tmp_path / "half"
    shutil.copytree(pad_run.run_dir, half, ignore=shutil.ignore_patterns("pad"))
    aligned_before = (half / "align" / "model.pt").read_bytes()
    out = run_pad(split, half, overrides=FAST, evaluate=False)
    assert out.skipped == ["pretrain", "embed", "align"]
    assert (half / "pad" / "model.pt").exists() and out.pad is not None
    assert (half / "align" / "model.pt").read_bytes() == aligned_before  # finished stages are not rewritten


def test_gru4rec_backbone_runs_every_stage(toy, tmp_path):
    split, text = toy
    fast = {**FAST, "backbone.max_epochs": 2, "max_epochs": 2}
    out = run_pad(split, tmp_path / "gru", backbone="gru4rec", overrides=fast, text=text)
    assert set(out.results) == {"gru4rec", "aligned", "pad-gru4rec"}
    assert out.pad.net.names == ("collab", "aligned", "text")
    scores = out.pad.score(split.histories("test")[:3])
    assert scores.shape == (3, split.n_items + 1) and torch.isfinite(scores[:, 1:]).all()


def test_expert_loss_adds_each_experts_own_cross_entropy(pad_run, toy):
    import torch.nn.functional as F

    split, _ = toy
    rec = Recommender.load(pad_run.run_dir / "pad")
    inp, tgt = next(iter(rec.train_loader(split)))
    rec.net.eval()  # no dropout: both losses see the same network
    with torch.no_grad():
        base, n = rec.training_loss((inp, tgt))
        rec.params = rec.params.model_copy(update={"expert_loss": 0.5})
        with_aux, n2 = rec.training_loss((inp, tgt))
        tables = rec.net.tables()
        keep = tgt > 0
        own = [
            F.cross_entropy(part[:, 1:], tgt[keep] - 1)
            for part in rec.net.expert_logits([h[keep] for h in rec.net.hidden(inp, tables)], tables)
        ]
    assert n == n2 == int(keep.sum())
    assert with_aux.item() == pytest.approx(base.item() + 0.5 * sum(o.item() for o in own), rel=1e-5)
    assert all(o.item() > 0 for o in own) and len(own) == 3


def test_stage3_trains_with_the_configured_loss_on_the_gated_scores(pad_run, toy):
    """loss=bce (the official code's) reaches stage 3: BCE of the mixture's score for the target and for uniform
    negatives, not the cross-entropy over all items."""
    import torch.nn.functional as F

    split, _ = toy
    rec = Recommender.load(pad_run.run_dir / "pad")
    inp, tgt = next(iter(rec.train_loader(split)))
    rec.net.eval()
    with torch.no_grad():
        ce, _ = rec.training_loss((inp, tgt))
        rec.train_cfg = rec.train_cfg.model_copy(update={"loss": "bce", "n_negatives": 3})
        torch.manual_seed(7)
        bce, n = rec.training_loss((inp, tgt))
        keep = tgt > 0
        tables = rec.net.tables()
        mixed = rec.net.mix(rec.net.expert_logits([h[keep] for h in rec.net.hidden(inp, tables)], tables))
        torch.manual_seed(7)
        negs = torch.randint(1, split.n_items + 1, (n, 3))
    pos, neg = mixed.gather(1, tgt[keep][:, None])[:, 0], mixed.gather(1, negs)
    expected = F.softplus(-pos).mean() + 3 * F.softplus(neg).mean()
    assert bce.item() == pytest.approx(expected.item(), rel=1e-5)
    assert ce.item() == pytest.approx(F.cross_entropy(mixed[:, 1:], tgt[keep] - 1).item(), rel=1e-5)
    assert abs(bce.item() - ce.item()) > 0.1


def test_only_scores_with_one_expert_and_restores_the_gates(pad_run, toy):
    split, _ = toy
    rec = Recommender.load(pad_run.run_dir / "pad")
    seqs = rec.query(split.histories("test")[:4])
    before = rec.score(split.histories("test")[:4])
    with torch.no_grad():
        parts = rec.net.expert_scores(seqs)
    for k, name in enumerate(rec.net.names):
        with rec.net.only(name):
            assert torch.allclose(rec.score(split.histories("test")[:4]), parts[k], atol=1e-5)
    assert torch.allclose(rec.score(split.histories("test")[:4]), before)


def test_text_init_pretrain_trains_the_text_expert_alone_first(pad_run, toy, tmp_path):
    """``text_init=pretrain``: a text-only tower is trained and reported before stage 3, which requires it."""
    import shutil

    from padrec.pad.recommender import PAD

    split, text = toy
    run = tmp_path / "textpre"
    shutil.copytree(pad_run.run_dir, run, ignore=shutil.ignore_patterns("pad"))
    out = run_pad(split, run, overrides={**FAST, "text_init": "pretrain"}, text=text)
    assert out.skipped == ["pretrain", "align"]  # the text table was given, so 'embed' did not run
    assert (run / "text-expert" / "model.pt").exists()
    assert list(out.results) == ["sasrec", "aligned", "text-only", "pad-sasrec"]
    # the toy text names each item's cluster and users stay in one cluster: text alone ranks well
    # (random ranking of 60 items gives NDCG@10 ≈ 0.07)
    assert out.results["text-only"].overall["NDCG@10"] > 0.15
    with pytest.raises(ValueError, match="pad-text"):
        PAD(params={"text_init": "pretrain"}, train={"max_epochs": 1}).fit(split, out.backbone, text, out.aligned)


def test_last_items_skips_padding_and_the_mask_token():
    from padrec.pad.model import last_items

    seqs = torch.tensor([[0, 0, 3, 9, 5], [0, 4, 9, 9, 0]])
    assert last_items(seqs).tolist() == [[0, 0, 3, 9, 5], [0, 4, 9, 9, 9]]  # padding looks back too
    # 9 is the mask token: a masked position looks back to the item before it
    assert last_items(seqs, mask_id=9).tolist() == [[0, 0, 3, 3, 5], [0, 4, 4, 4, 4]]


def test_similarity_expert_scores_title_similarity_to_the_last_item(pad_run, toy, tmp_path):
    """``experts=[collab,aligned,similarity]``: the third expert's score is scale · cos(t_last, t_i)."""
    import shutil

    split, text = toy
    run = tmp_path / "sim"
    shutil.copytree(pad_run.run_dir, run, ignore=shutil.ignore_patterns("pad"))
    out = run_pad(split, run, overrides={**FAST, "experts": ["collab", "aligned", "similarity"]}, text=text)
    net = out.pad.net
    assert net.names == ("collab", "aligned", "similarity")
    hist = split.histories("test")[:5]
    with torch.no_grad():
        sim = net.expert_scores(out.pad.query(hist))[2]
    t = torch.nn.functional.normalize(torch.as_tensor(text), dim=1)
    last = torch.as_tensor([h[-1] for h in hist])
    expected = net.experts["similarity"].log_scale.exp() * (t[last] @ t.T)
    assert torch.allclose(sim[:, 1:], expected[:, 1:], atol=1e-4)
    # only its scale is trainable: the text similarity itself cannot be trained away
    trainable = [n for n, p in net.experts["similarity"].named_parameters() if p.requires_grad]
    assert trainable == ["log_scale"]
    # the toy text names the cluster users stay in: the mixture is far above random (NDCG@10 ≈ 0.07)
    assert out.results["pad-sasrec"].overall["NDCG@10"] > 0.15
    # a new item is scored by its text at once, and save/load keeps it
    rec = Recommender.load(run / "pad")
    assert rec.add_item_vectors(["new"], text[hist[0][-1]][None], ["New"]) == 1
    scores = rec.score(hist[:1])
    assert torch.isfinite(scores[0, -1]) and "new" in [
        r["item_id"] for r in rec.recommend([split.dataset.to_external(hist[0])], k=10)[0]
    ]


def test_unknown_or_repeated_experts_are_rejected(pad_run, toy):
    from padrec.pad.recommender import PAD

    split, text = toy
    for bad in (["collab", "txet"], ["collab", "collab"]):
        with pytest.raises(ValueError, match="distinct names"):
            PAD(params={"experts": bad}).fit(split, pad_run.backbone, text, pad_run.aligned)


def test_frozen_experts_keep_their_loaded_weights_and_no_dropout(pad_run, toy, tmp_path):
    from padrec.pad.recommender import PAD

    split, text = toy
    fast = {"max_epochs": 2, "lr": 0.05, "progress": False, "batch_size": 32}
    params = {"experts": ["collab", "aligned", "similarity"], "freeze": ["collab", "aligned"]}
    rec = PAD(params=params, train=fast).fit(split, pad_run.backbone, text, pad_run.aligned, run_dir=tmp_path)
    before = pad_run.backbone.net.state_dict()
    after = rec.net.experts["collab"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after)
    assert all(
        torch.equal(v, rec.net.experts["aligned"].state_dict()[k]) for k, v in pad_run.aligned.net.state_dict().items()
    )
    rec.net.train()
    assert not rec.net.experts["collab"].training and rec.net.experts["similarity"].training
    # the gates did train
    init = torch.stack([gate_init(10)[k] for k in rec.net.names])
    assert not torch.allclose(rec.net.gates.detach(), init)
    with pytest.raises(ValueError, match="freeze"):
        PAD(params={"experts": ["collab", "text"], "freeze": ["aligned"]}).fit(split, pad_run.backbone, text)


def test_gate_lr_moves_the_gates_alone(pad_run, toy, tmp_path):
    from padrec.pad.recommender import PAD

    split, text = toy
    params = {"experts": ["collab", "similarity"], "freeze": ["collab"]}
    init = torch.stack([gate_init(10)[k] for k in ("collab", "similarity")])
    moved = {}
    for gate_lr in (None, 0.05):
        train = {"max_epochs": 1, "lr": 1e-9, "progress": False, "batch_size": 32}
        rec = PAD(params={**params, "gate_lr": gate_lr}, train=train)
        rec.fit(split, pad_run.backbone, text, run_dir=tmp_path / str(gate_lr))
        moved[gate_lr] = (rec.net.gates.detach() - init).abs().max().item()
        scale = rec.net.experts["similarity"].log_scale.detach().exp().item()
        assert scale == pytest.approx(10.0, rel=1e-5)  # the expert keeps the base lr
    assert moved[None] < 1e-6 < 1e-3 < moved[0.05]
    with pytest.raises(ValueError, match="gate_lr"):
        PAD(params={"gate_lr": 0})


def test_blend_falls_back_to_the_collab_expert_per_bin_and_survives_save_load_and_new_items(pad_run, toy, tmp_path):
    split, text = toy
    pad = Recommender.load(pad_run.run_dir / "pad")
    net = pad.net
    hist = split.histories("test")[:8]
    with torch.inference_mode():
        mixed = pad.score(hist)
        with net.only("collab"):
            alone = pad.score(hist)
        net.set_blend([0.0] * 10)
        assert torch.allclose(pad.score(hist), alone, atol=1e-5)  # share 0 everywhere: the collab expert alone
        half = [1.0] * 5 + [0.0] * 5  # the popular half keeps the mixture, the cold half falls back
        net.set_blend(half)
        got = pad.score(hist)
    cold_items = (net.item_bins >= 5).numpy()
    assert torch.allclose(got[:, ~cold_items], mixed[:, ~cold_items], atol=1e-5)
    assert torch.allclose(got[:, cold_items], alone[:, cold_items], atol=1e-5)
    with torch.inference_mode(), net.only("aligned"):  # one expert alone ignores the blend, then restores it
        assert not torch.allclose(pad.score(hist), got)
    assert torch.equal(net.item_blend, torch.as_tensor(half)[net.item_bins])
    pad.save(tmp_path / "blended")
    again = Recommender.load(tmp_path / "blended")
    with torch.inference_mode():
        assert torch.allclose(again.score(hist), got, atol=1e-6)
    # a run saved before blending existed (no item_blend in model.pt) loads as the plain mixture
    state = torch.load(pad_run.run_dir / "pad" / "model.pt")
    state.pop("item_blend", None)
    pad.load_state_dict(state)
    assert bool((pad.net.item_blend == 1).all())
    # items added from text keep the full mixture (their collab score is 0: falling back would hide them)
    again.add_item_vectors(["new1"], text[1:2])
    assert again.net.item_blend[-1] == 1.0 and again.net.item_blend.numel() == again.net.item_bins.numel()
    with pytest.raises(ValueError, match="blend values in"):
        net.set_blend([2.5] * 10)
    # above 1 the blend moves on to the text-side expert alone (this run's third expert is "text")
    assert net.text_side() == "text"
    with torch.inference_mode():
        with net.only("text"):
            text_alone = pad.score(hist)
        net.set_blend([2.0] * 10)
        assert torch.allclose(pad.score(hist), text_alone, atol=1e-5)
        net.set_blend([1.5] * 10)
        assert torch.allclose(pad.score(hist), (mixed + text_alone) / 2, atol=1e-4)


def test_search_blend_keeps_cold_items_at_the_collab_experts_level():
    from padrec.pad.calibrate import search_blend

    # a made-up world of 2 bins: the mixture helps overall via bin 0 (popular) and hurts cold items via bin 1
    def measure(blend):
        a0, a1 = blend
        return 0.10 + 0.02 * a0 - 0.001 * a1, 0.05 - 0.02 * a1 + 0.001 * a0

    found = search_blend(measure, 2)
    assert found["blend"] == [1.0, 0.0]  # keep the mixture where it helps, fall back where cold items pay
    assert found["cold_floor"] == pytest.approx(0.05) and found["cold"] >= found["cold_floor"]
    assert found["evaluations"] == 2 + 2 * 4
    # the backbone's cold level is a floor, however much the mixture adds overall
    found = search_blend(lambda b: (0.100 + 0.005 * b[0], 0.05 - 0.001 * b[0]), 1)
    assert found["blend"] == [0.0] and found["cold_floor"] == pytest.approx(0.05)
    # among blends that keep it, the best overall wins, not the best cold score
    found = search_blend(lambda b: (0.1 + 0.02 * b[0] ** 2 * (1 - b[0]), 0.05 + 0.03 * b[0] * (1 - b[0]) ** 2), 1)
    assert found["blend"] == [0.75]  # every share keeps cold >= 0.05; overall peaks at 0.75, cold at 0.25

    # the mixture helps cold items too: nothing to undo
    assert search_blend(lambda b: (0.1 + 0.01 * sum(b), 0.05 + 0.01 * sum(b)), 3)["blend"] == [1.0, 1.0, 1.0]
    # a cold gain the gates made is kept, even where falling back would add a little overall
    assert search_blend(lambda b: (0.101 - 0.001 * b[0], 0.05 + 0.02 * b[0]), 1)["blend"] == [1.0]


def test_search_budget_buys_cold_items_with_at_most_its_share_of_overall():
    from padrec.pad.calibrate import SHARES, search_budget

    # every bin moved together: overall peaks at 1.1 (0.1102) and falls past it, cold rises up to 1.5
    def measure(blend):
        s = sum(blend) / len(blend)
        return 0.10 + 0.01 * s - 0.02 * max(s - 1, 0) ** 2 * 4, 0.05 + 0.01 * min(s, 1.5)

    found = search_budget(measure, 2, budget=0.05)
    assert found["overall_floor"] == pytest.approx(0.95 * 0.1102)
    # the most cold whose overall stays >= 0.1047: 1.3 (0.1058); 1.4 falls to 0.1012
    assert found["share"] == 1.3 and found["overall"] >= found["overall_floor"]
    assert found["cold"] >= found["shares"]["1.3"]["cold"] and found["evaluations"] > len(SHARES)
    # no budget: the share with the best overall
    assert search_budget(measure, 2, budget=0.0)["share"] == 1.1
    with pytest.raises(ValueError, match="calibrate_budget"):
        search_budget(measure, 2, budget=1.0)


def test_calibrate_stage_chooses_on_half_the_validation_users_and_is_recorded(pad_run, toy, tmp_path):
    import json
    import shutil

    from padrec.pad.calibrate import validation_halves
    from padrec.pad.recommender import PADConfig
    from padrec.train.config import ConfigError

    split, text = toy
    run = tmp_path / "cal"
    shutil.copytree(pad_run.run_dir, run)
    out = run_pad(split, run, overrides={**FAST, "calibrate": True}, text=text)
    assert "pad" in out.skipped  # stage 3 reused as trained, then calibrated
    cal = json.loads((run / "pad" / "calibration.json").read_text())
    a, b = validation_halves(split, seed=FAST.get("seed", 42))
    assert cal["users"] == len(a) and len(a) + len(b) == len(split.users("valid")) and not set(a) & set(b)
    assert cal["cold"] >= cal["cold_floor"]
    assert cal["cold_floor"] == max(cal["collab_alone"]["cold"], cal["learned"]["cold"])
    for end in ("learned", "collab_alone"):  # never worse overall than an end that keeps cold items as well
        assert cal["overall"] >= cal[end]["overall"] or cal[end]["cold"] < cal["cold_floor"]
    assert torch.equal(out.pad.net.item_blend, torch.as_tensor(cal["blend"])[out.pad.net.item_bins])
    saved = json.loads((run / "pad" / "config.json").read_text())
    assert saved["params"]["calibrate"] is True
    again = run_pad(split, run, overrides={**FAST, "calibrate": True}, text=text)
    assert "calibrate" in again.skipped and torch.equal(again.pad.net.item_blend, out.pad.net.item_blend)
    with pytest.raises(ConfigError, match="gates were calibrated"):  # a calibrated stage 3 never passes for plain
        run_pad(split, run, overrides=FAST, text=text, evaluate=False)
    with pytest.raises(ValueError, match="calibrate=true falls back to the collab expert"):
        PADConfig(experts=["aligned", "text"], calibrate=True)
    with pytest.raises(ValueError, match="calibrate_budget > 0 needs"):
        PADConfig(experts=["collab", "aligned"], calibrate=True, calibrate_budget=0.05)
    # another budget: the calibration is redone (cheap), not reused or refused
    cold = {**FAST, "calibrate": True, "calibrate_budget": 0.05}
    third = run_pad(split, run, overrides=cold, text=text, evaluate=False)
    cal = json.loads((run / "pad" / "calibration.json").read_text())
    assert "calibrate" not in third.skipped and cal["budget"] == 0.05 and max(cal["grid"]) == 2.0
    assert (
        cal["overall"]
        >= cal["overall_floor"]
        == pytest.approx(0.95 * max(v["overall"] for v in cal["shares"].values()))
    )
    assert cal["cold"] >= cal["shares"][str(cal["share"])]["cold"]
    assert torch.equal(third.pad.net.item_blend, torch.as_tensor(cal["blend"])[third.pad.net.item_bins])
    assert json.loads((run / "pad" / "config.json").read_text())["params"]["calibrate_budget"] == 0.05
    assert "calibrate" in run_pad(split, run, overrides=cold, text=text, evaluate=False).skipped


# -- bench/bench_pad.py: validation numbers, new items, choosing the default on validation users -----------------


def _bench_module(name: str):
    """A script of bench/ imported as a module (bench/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench_module("bench_pad")


def _made(bench, dataset, preset, valid, backbone_valid, test=0.1, preset_in_config=True):
    """A hand-made accuracy record: ``valid``/``backbone_valid`` are (overall, cold) validation NDCG@10 per seed."""
    per_seed = []
    for seed, ((v, vc), (b, bc)) in enumerate(zip(valid, backbone_valid, strict=True)):
        per_seed.append({
            "seed": seed, "NDCG@10": test, "groups": {},
            "valid": {"NDCG@10": v, "groups": {"cold": {"NDCG@10": vc}}},
            "backbone_valid": {"NDCG@10": b, "groups": {"cold": {"NDCG@10": bc}}},
        })  # fmt: skip
    config = {"backbone": "sasrec", "preset": preset} if preset_in_config else {"backbone": "sasrec"}
    return {"task": "accuracy", "dataset": dataset, "model": bench.pad_name("sasrec", preset), "config": config,
            "seeds": list(range(len(valid))), "per_seed": per_seed, "metrics": {"NDCG@10": test}}  # fmt: skip


def test_choose_default_uses_validation_numbers_not_test_numbers(bench):
    bb = [(0.10, 0.020), (0.12, 0.030)]  # the backbone of seeds 0 and 1: mean 0.11, cold mean 0.025
    records = [
        # paper: +5% valid overall on both datasets, best on TEST
        _made(bench, "ml-1m", "paper", [(0.105, 0.021), (0.126, 0.0315)], bb, test=0.30),
        _made(bench, "amazon-beauty", "paper", [(0.105, 0.021), (0.126, 0.0315)], bb, test=0.30),
        # simfrozen: +10% (ml-1m) and +20% (beauty) on validation, worse on test
        _made(bench, "ml-1m", "simfrozen", [(0.11, 0.03), (0.132, 0.03)], bb, test=0.20),
        _made(bench, "amazon-beauty", "simfrozen", [(0.12, 0.03), (0.144, 0.03)], bb, test=0.20),
        # other backbones and tasks are not read
        {"task": "speed", "dataset": "ml-1m", "model": "pad-sasrec", "metrics": {}},
    ]
    by_test = max(("paper", "simfrozen"), key=lambda p: records[0 if p == "paper" else 2]["metrics"]["NDCG@10"])
    assert by_test == "paper"
    choice = bench.choose_default(records)
    assert choice["winner"] == "simfrozen"
    sim = choice["presets"]["simfrozen"]
    # ratio of the seed means against the seed-paired backbone: (0.11 + 0.132) / (0.10 + 0.12) - 1 = +10%
    assert sim["datasets"]["ml-1m"]["rel"] == pytest.approx(0.10)
    assert sim["datasets"]["amazon-beauty"]["rel"] == pytest.approx(0.20)
    assert sim["score"] == pytest.approx(0.15) and sim["datasets"]["ml-1m"]["rel_cold"] == pytest.approx(0.2)
    assert choice["presets"]["paper"]["score"] == pytest.approx(0.05)
    table = bench.choice_table(choice)
    assert "winner: simfrozen" in table and "+15.0%" in table

    # simfrozen losing on cold validation items of one dataset is out, however good overall
    records[3] = _made(bench, "amazon-beauty", "simfrozen", [(0.12, 0.02), (0.144, 0.02)], bb, test=0.20)
    choice = bench.choose_default(records)
    assert not choice["presets"]["simfrozen"]["eligible"] and choice["winner"] == "paper"
    # nobody holds up on cold items: no winner, and the table says so
    records[1] = _made(bench, "amazon-beauty", "paper", [(0.2, 0.01), (0.2, 0.01)], bb)
    choice = bench.choose_default(records)
    assert choice["winner"] is None and "winner: none" in bench.choice_table(choice)


def test_choose_default_compares_on_the_selection_half_that_calibration_never_saw(bench):
    bb = [(0.10, 0.02)]
    records = [_made(bench, d, p, [(0.11, 0.03)], bb) for d in ("ml-1m", "amazon-beauty") for p in ("paper", "simcal")]
    with pytest.raises(SystemExit, match="a calibrated preset needs numbers on the selection half"):
        bench.choose_default(records)
    for r in records:  # on the untouched half, simcal loses on cold items of ml-1m: out, whatever all users say
        cold = 0.01 if (r["dataset"], r["model"]) == ("ml-1m", "pad-sasrec-simcal") else 0.025
        r["per_seed"][0]["valid_select"] = {"NDCG@10": 0.12, "groups": {"cold": {"NDCG@10": cold}}}
        r["per_seed"][0]["backbone_valid_select"] = {"NDCG@10": 0.10, "groups": {"cold": {"NDCG@10": 0.02}}}
    choice = bench.choose_default(records)
    assert choice["users"] == "valid_select" and choice["winner"] == "paper"
    assert not choice["presets"]["simcal"]["eligible"] and "selection half" in bench.choice_table(choice)
    assert choice["presets"]["paper"]["datasets"]["ml-1m"]["rel"] == pytest.approx(0.2)


def test_choose_default_refuses_without_validation_numbers(bench):
    bb = [(0.10, 0.02)]
    good = [_made(bench, d, p, [(0.11, 0.021)], bb) for d in ("ml-1m", "amazon-beauty") for p in ("paper", "simfrozen")]
    assert bench.choose_default(good)["winner"] == "paper"  # a tie goes to the preset listed first
    # one seed of one record without validation numbers: no choice at all, and the message says which
    missing = [dict(r) for r in good]
    missing[3] = {**missing[3], "per_seed": [{k: v for k, v in s.items() if k != "valid"} for s in good[3]["per_seed"]]}
    with pytest.raises(SystemExit, match=r"validation numbers are missing\n  amazon-beauty pad-sasrec-simfrozen: no"):
        bench.choose_default(missing)
    # a record of the bench before validation numbers existed (test numbers only, no preset)
    legacy = {k: v for k, v in good[0].items() if k != "per_seed"}
    legacy["config"] = {"backbone": "sasrec"}
    with pytest.raises(SystemExit, match=r"ml-1m pad-sasrec: no validation numbers .*not made with --presets paper"):
        bench.choose_default([legacy, *good[1:]])
    # a preset measured on one dataset only is not compared; none on both: refused
    with pytest.raises(SystemExit, match="no preset has sasrec records on every one of ml-1m, amazon-beauty"):
        bench.choose_default([r for r in good if r["dataset"] == "ml-1m"])


@pytest.mark.slow
def test_bench_records_validation_numbers_and_new_items(bench, tmp_path):
    """The bench end to end on ml-100k with tiny training: two presets on one backbone, then the new-item protocol,
    into a results folder of its own (bench/results is never touched)."""
    import json

    from conftest import needs_data

    from padrec.data.registry import load_dataset
    from padrec.eval.evaluator import Evaluator

    needs_data("ml-100k")
    results, work = tmp_path / "results", tmp_path / "work"
    fast = ["max_epochs=1", "limit_train_batches=3", "backbone.max_epochs=1", "backbone.limit_train_batches=3",
            "backbone.max_len=20", "backbone.d=16", "backbone.n_layers=1"]  # fmt: skip
    where = ["--results", str(results), "--work", str(work), "--dataset", "ml-100k", "--seeds", "0"]
    bench.main([*where, "--presets", "paper", "simfrozen", "simcal", "--", *fast])
    bench.main([*where, "--presets", "simfrozen", "--new-items", "0.1", "--", *fast])

    records = json.loads((results / "pad.json").read_text())["records"]
    acc = {r["model"]: r for r in records if r["task"] == "accuracy"}
    assert set(acc) == {"sasrec", "pad-sasrec", "pad-sasrec-simfrozen", "pad-sasrec-simcal"}
    base = acc["sasrec"]["per_seed"][0]
    for name, preset in (("pad-sasrec", "paper"), ("pad-sasrec-simfrozen", "simfrozen")):
        rec = acc[name]
        assert rec["config"]["preset"] == preset and rec["seeds"] == [0]
        assert rec["config"]["overrides"]["max_epochs"] == 1
        assert rec["valid"]["stage"] == "valid" and "NDCG@10" in rec["valid"]["metrics"]
        assert {"cold", "warm"} <= set(rec["valid"]["groups"])
        seed = rec["per_seed"][0]
        assert seed["epochs"]["pretrain"]["epochs"] == seed["epochs"]["pad"]["epochs"] == 1
        assert seed["backbone_valid"] == base["valid"]  # both presets were built on the one backbone
        assert seed["backbone_test"]["NDCG@10"] == base["NDCG@10"]  # and its test numbers, for paired changes
        assert seed["backbone_test"]["groups"]["cold"]["NDCG@10"] == base["groups"]["cold"]["NDCG@10"]
    assert acc["pad-sasrec-simfrozen"]["config"]["overrides"]["freeze"] == ["collab", "aligned"]
    # the stored validation numbers are the Evaluator's on the validation users of the final backbone
    from padrec.data.split import leave_one_out

    split = leave_one_out(load_dataset("ml-100k"))
    again = Evaluator(split).run(Recommender.load(work / "ml-100k" / "sasrec-seed0" / "pretrain"), stage="valid")
    assert base["valid"]["NDCG@10"] == pytest.approx(again.overall["NDCG@10"])
    assert base["valid"]["groups"]["cold"]["users"] == again.groups["cold"]["users"]
    assert not (work / "ml-100k" / "sasrec-simfrozen-seed0" / "pretrain" / "checkpoints").exists()  # copied
    # the presets differ in stage-3 keys only: simfrozen reuses paper's align stage instead of training its own
    sim_align, paper_align = (work / "ml-100k" / f"sasrec{p}-seed0" / "align" for p in ("-simfrozen", ""))
    assert not (sim_align / "checkpoints").exists() and (paper_align / "checkpoints").exists()
    assert (sim_align / "model.pt").read_bytes() == (paper_align / "model.pt").read_bytes()
    # simcal starts from simfrozen's very stage 3 and calibrates it: recorded per seed, on the other half's users
    cal_seed = acc["pad-sasrec-simcal"]["per_seed"][0]
    assert cal_seed["calibration"]["cold"] >= cal_seed["calibration"]["cold_floor"]
    assert not (work / "ml-100k" / "sasrec-simcal-seed0" / "pad" / "checkpoints").exists()
    assert cal_seed["valid_select"]["users"] + cal_seed["calibration"]["users"] == cal_seed["valid"]["users"]
    assert cal_seed["backbone_valid_select"] == acc["sasrec"]["per_seed"][0]["valid_select"]

    new = {r["model"]: r for r in records if r["task"] == "newitems"}
    assert set(new) == {"sasrec", "pad-sasrec-simfrozen"}
    for rec in new.values():
        assert rec["protocol"] == "full-newitems" and rec["share"] == 0.1 and rec["seeds"] == [0]
        assert rec["held_items"] == 168 and rec["users"][0] > 50 and "NDCG@10" in rec["valid"]["metrics"]
    assert new["sasrec"]["metrics"]["HR@10"] == 0.0 and new["sasrec"]["per_seed"][0]["scorable"] == 0
    assert new["pad-sasrec-simfrozen"]["per_seed"][0]["scorable"] == new["pad-sasrec-simfrozen"]["users"][0]

    md = (results / "pad.md").read_text()
    assert "Validation users" in md and "| ml-100k | pad-sasrec-simfrozen | simfrozen | 1 |" in md
    # absolute-count groups beside the relative bins, with each group's users (the same for every model)
    assert "| dataset | model | seeds | freq0 | freq1-10 | freq11-50 | freq51-200 | freq>200 |" in md
    cold_users = acc["sasrec"]["groups"]["freq1-10"]["users"]
    assert cold_users > 0 and acc["pad-sasrec"]["groups"]["freq1-10"]["users"] == cold_users
    assert f"({cold_users})" in md
    assert "New items (protocol full-newitems)" in md and "| ml-100k | sasrec | – | 0.1 | 1 | 168 |" in md
    assert (results / "pad_ml-100k.png").exists()
    with pytest.raises(SystemExit, match="no preset has sasrec records"):
        bench.main(["--choose-default", "--results", str(results)])


def test_added_seeds_keep_what_the_later_runs_note_says(bench):
    config = {"preset": "paper", "overrides": {"patience": 5}}

    def record(seed: int, note: str) -> dict:
        values = {"seed": seed, "HR@10": 0.2 + seed / 100, "NDCG@10": 0.1, "groups": {}}
        return bench._mean_record("pad-sasrec", [values], "ml-1m", "full-loo", note, config)

    stored = record(0, "encoder minilm; stage epochs (seed 0): {'pad': 14}; overrides {'patience': 5}")
    later = record(1, "seed 0's backbone; encoder minilm; stage epochs (seed 1): {'pad': 9}; overrides {'patience': 5}")
    out = bench._add_seeds(stored, later)
    assert out["seeds"] == [0, 1] and out["metrics"]["HR@10"] == pytest.approx(0.205)
    added = out["note"].split("added by a later run")[1]
    assert "seed 0's backbone" in added and "stage epochs (seed 1): {'pad': 9}" in added
    assert "encoder minilm" not in added and "overrides" not in added  # said once, by the stored note
    with pytest.raises(SystemExit, match=r"seeds \[1\] are already in the stored record"):
        bench._add_seeds(out, later)


def test_added_seeds_add_to_a_presets_own_backbone_row(bench):
    config = {"preset": "paper-bce", "overrides": {"backbone.loss": "bce", "loss": "bce"}}

    def record(seed: int, pad: float, own: float) -> dict:
        rec = bench._mean_record(
            "pad-sasrec-paper-bce",
            [{"seed": seed, "HR@10": 0.2, "NDCG@10": pad, "groups": {}}],
            "ml-1m",
            "full-loo",
            "",
            config,
        )
        rec["own_backbone"] = bench._own_backbone([{"seed": seed, "HR@10": 0.2, "NDCG@10": own, "groups": {}}])
        return rec

    out = bench._add_seeds(record(0, 0.12, 0.10), record(1, 0.14, 0.08))
    assert out["own_backbone"]["seeds"] == [0, 1] and [s["seed"] for s in out["own_backbone"]["per_seed"]] == [0, 1]
    assert out["own_backbone"]["metrics"]["NDCG@10"] == pytest.approx(0.09)
    assert out["metrics"]["NDCG@10"] == pytest.approx(0.13)


def test_change_table_pairs_each_pad_row_with_the_backbone_it_was_built_on(bench):
    def seed(s: int, pad: float, base: float) -> dict:
        valid = {"NDCG@10": pad, "groups": {"cold": {"NDCG@10": pad / 2}}}
        base_valid = {"NDCG@10": base, "groups": {"cold": {"NDCG@10": base / 4}}}
        test = {"HR@10": 0.2, "NDCG@10": pad, "groups": {"cold": {"HR@10": 0.1, "NDCG@10": pad / 2}}}
        return {"seed": s, **test, "valid": valid, "backbone_valid": base_valid}

    backbone = bench._mean_record(
        "sasrec", [{"seed": 0, "HR@10": 0.2, "NDCG@10": 0.10, "groups": {"cold": {"HR@10": 0.1, "NDCG@10": 0.05}}}],
        "ml-1m", "full-loo", "", {"backbone": "sasrec", "overrides": {}},
    )  # fmt: skip
    lam = bench._mean_record(
        "pad-sasrec-lam1.0", [seed(0, 0.11, 0.10), seed(1, 0.13, 0.10)], "ml-1m", "full-loo", "",
        {"backbone": "sasrec", "encoder": "minilm", "preset": None, "overrides": {"lam": 1.0, "patience": 5}},
    )  # fmt: skip
    bce = bench._mean_record(
        "pad-sasrec-paper-bce", [seed(0, 0.09, 0.08)], "ml-1m", "full-loo", "",
        {"backbone": "sasrec", "encoder": "minilm", "preset": "paper-bce", "overrides": {"loss": "bce"}},
    )  # fmt: skip
    bce["own_backbone"] = bench._own_backbone([{"seed": 0, "HR@10": 0.1, "NDCG@10": 0.06, "groups": {}}])
    paired = bench._mean_record(
        "pad-sasrec-smollm2", [{**seed(0, 0.11, 0.10), "backbone_test": {"NDCG@10": 0.088, "groups": {}}}],
        "ml-1m", "full-loo", "", {"backbone": "sasrec", "encoder": "smollm2", "preset": None, "overrides": {}},
    )  # fmt: skip
    lines = bench._change_markdown([backbone, lam, bce, paired])
    # valid: 0.12 vs 0.10 paired over the seeds (+20%), cold 0.06 vs 0.025 (+140%); test: 0.12 vs the
    # backbone record's 0.10 (+20%), cold 0.06 vs 0.05 (+20%)
    assert "| ml-1m | pad-sasrec-lam1.0 | – | minilm | lam=1.0 | 2 | +20.0% | +140.0% | +20.0% | +20.0% |" in lines
    # a preset with its own backbone is compared with that backbone (0.09 vs 0.06), not the dataset's row
    assert "| ml-1m | pad-sasrec-paper-bce | paper-bce | minilm | – | 1 | +12.5% | +125.0% | +50.0% | – |" in lines
    # a seed that kept its own backbone's test numbers is compared with those (0.11 vs 0.088), not the record's
    assert "| ml-1m | pad-sasrec-smollm2 | – | smollm2 | – | 1 | +10.0% | +120.0% | +25.0% | – |" in lines


def test_merge_from_replaces_stored_records_with_a_study_folders(bench, tmp_path):
    import json

    config = {"preset": "paper", "overrides": {}}

    def record(seeds: list[int], ndcg: float) -> dict:
        values = [{"seed": s, "HR@10": 0.2, "NDCG@10": ndcg, "groups": {}} for s in seeds]
        return bench._mean_record("pad-sasrec", values, "ml-1m", "full-loo", "", config)

    results, study = tmp_path / "results", tmp_path / "study"
    bench._merge([record([0, 1], 0.10)], results)
    bench._merge([record([0, 1, 2], 0.12)], study)
    bench.main(["--merge-from", str(study), "--results", str(results)])
    (stored,) = json.loads((results / "pad.json").read_text())["records"]
    assert stored["seeds"] == [0, 1, 2] and stored["metrics"]["NDCG@10"] == pytest.approx(0.12)
    with pytest.raises(SystemExit, match=r"cannot merge: .*nowhere/pad.json does not exist"):
        bench.main(["--merge-from", str(tmp_path / "nowhere"), "--results", str(results)])


def test_bench_shares_the_align_stage_only_between_configurations_it_cannot_tell_apart(bench):
    """Stage-3 keys (experts, freeze, gates...) leave the align stage as it is; any other key retrains it."""
    paper = {"seed": 0, "patience": 5}
    sim = {**paper, "experts": ["collab", "aligned", "similarity"], "freeze": ["collab", "aligned"], "gate_lr": 0.01}
    assert bench._align_key(paper) == bench._align_key(sim) is not None
    assert bench._align_key({**paper, "lam": 0.5}) != bench._align_key(paper)
    assert bench._align_key({**paper, "seed": 1}) != bench._align_key(paper)
    assert bench._align_key({**paper, "experts": ["collab", "text"]}) is None  # no aligned expert: no align stage


def test_bench_gives_a_preset_that_changes_the_backbone_a_backbone_of_its_own(bench, tmp_path):
    """--pretrained is the call's backbone: a preset with backbone.* keys (paper-official) must not be handed it,
    but trains its own once per seed and hands that on to presets of the same backbone keys."""
    from padrec.pad.pipeline import with_preset

    pretrained = tmp_path / "given" / "pretrain"
    pretrained.mkdir(parents=True)
    (pretrained / "model.pt").write_text("given")
    call = {"backbone.max_len": 50}
    stages = bench._SeedStages(pretrained, call)
    seeded = {"backbone.seed": 1, "seed": 1, "backbone.progress": False}
    stages.prepare(tmp_path / "paper", {**seeded, **with_preset("paper", call)})
    assert (tmp_path / "paper" / "pretrain" / "model.pt").read_text() == "given"
    official = {**seeded, **with_preset("paper-official", {})}
    stages.prepare(tmp_path / "official", official)
    assert not (tmp_path / "official" / "pretrain").exists()  # trains its own
    (tmp_path / "official" / "pretrain").mkdir(parents=True)
    (tmp_path / "official" / "pretrain" / "model.pt").write_text("official")
    stages.finished(tmp_path / "official", official)
    stages.prepare(tmp_path / "official-bins", {**official, "lam": 0.5})  # its own align and stage 3
    assert (tmp_path / "official-bins" / "pretrain" / "model.pt").read_text() == "official"
    assert bench._backbone_key({**call, "backbone.seed": 3}) == bench._backbone_key(call)


def test_bench_refuses_a_run_directory_made_with_other_settings(bench, tmp_path):
    """Finished stages are reused as they are: a run directory of other settings must not pass for this call's."""
    import json

    run = tmp_path / "sasrec-simfrozen-seed0"
    run.mkdir()
    (run / "pad.json").write_text(json.dumps({"overrides": {"seed": 0, "lr": 0.01}}))
    bench._prepare_run_dir(run, None, {"seed": 0, "lr": 0.01})  # the same settings: reused
    with pytest.raises(SystemExit, match="made with other settings"):
        bench._prepare_run_dir(run, None, {"seed": 0, "experts": ["collab", "aligned", "similarity"]})
    assert bench.pad_name("sasrec", "paper") == "pad-sasrec" and bench.pad_name("gru4rec", "simfrozen", "x") == (
        "pad-gru4rec-simfrozen-x"
    )
    assert bench._run_dir(tmp_path, "ml-1m", "sasrec", "pad-sasrec", 2, 0.05) == (
        tmp_path / "ml-1m" / "newitems0.05" / "sasrec-seed2"
    )


def test_presets_name_whole_configurations_and_none_means_the_chosen_default():
    from padrec.pad.pipeline import DEFAULT_PRESET, PRESETS, with_preset
    from padrec.pad.recommender import PADConfig

    assert DEFAULT_PRESET in PRESETS and PRESETS["paper"] == {}  # the published design is PADConfig's defaults
    assert with_preset(None, {"lam": 0.5}) == {**PRESETS[DEFAULT_PRESET], "lam": 0.5}
    assert with_preset("simcal", {"freeze": ["collab"]})["freeze"] == ["collab"]  # explicit keys win
    from padrec.pad.pipeline import _pad_configs, _split_overrides

    for name, keys in PRESETS.items():
        _, pad = _split_overrides(keys)
        params, _ = _pad_configs(pad)  # every preset is a valid configuration (a bad key or value raises)
        PADConfig(**params)
        assert name == "paper" or name.startswith("paper-") or set(keys) <= set(PADConfig.model_fields), name
    with pytest.raises(ValueError, match="unknown PAD preset 'papr': known presets are paper, simfrozen, simcal, "
                       "simcold, paper-bce"):  # fmt: skip
        with_preset("papr", {})


def test_a_finished_run_made_with_other_settings_is_refused_not_reused(pad_run, toy):
    from padrec.train.config import ConfigError

    split, text = toy
    with pytest.raises(ConfigError, match=r"holds a PAD run made with other settings .*'lam': 0\.5"):
        run_pad(split, pad_run.run_dir, overrides={**FAST, "lam": 0.5}, text=text, evaluate=False)
    with pytest.raises(ConfigError, match="backbone gru4rec"):
        run_pad(split, pad_run.run_dir, backbone="gru4rec", overrides=FAST, text=text, evaluate=False)
    # progress bars do not change a stage: the same run is reused
    again = run_pad(split, pad_run.run_dir, overrides={**FAST, "progress": True}, text=text, evaluate=False)
    assert "pad" in again.skipped


@pytest.fixture(scope="module")
def bench_ci():
    return _bench_module("bench_pad_ci")


def test_paired_bootstrap_of_a_pad_change(bench_ci, tmp_path):
    # ranks 0 and 1 give NDCG@10 1 and 1/log2(3); rank 10 is a miss
    from padrec.eval.metrics import ndcg_per_user

    assert ndcg_per_user(np.array([0, 1, 10]), 10) == pytest.approx([1.0, 1 / np.log2(3), 0.0])
    pad, base = np.array([1.0, 0.0, 0.5, 0.5]), np.array([0.5, 0.0, 0.5, 0.5])
    out = bench_ci.paired_change(pad, base, resamples=500, seed=0)
    assert out["change"] == pytest.approx(2.0 / 1.5 - 1) and out["users"] == 4
    assert 0 <= out["low"] <= out["change"] <= out["high"] and out["p_worse"] == 0  # PAD never worse per user
    same = bench_ci.paired_change(base, base, resamples=200, seed=0)
    assert same["change"] == same["low"] == same["high"] == 0
    with pytest.raises(SystemExit, match="not a finished PAD run"):
        bench_ci.main(["--dataset", "ml-100k", "--run-dir", str(tmp_path)])
