"""Training on real data (ml-100k): beats popularity, resumes, runs under 2-process DDP."""

from __future__ import annotations

import json

import pytest
from conftest import needs_data

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.models import get_model_class
from padrec.models.simple import Pop
from padrec.train.trainer import read_metrics

FAST = {"d": 32, "max_len": 50, "n_layers": 1}


@pytest.fixture(scope="module")
def ml100k_split():
    needs_data("ml-100k")
    return leave_one_out(load_dataset("ml-100k"))


def _sasrec(**train):
    return get_model_class("sasrec")(params=FAST, train={"progress": False, "batch_size": 64, **train})


def test_sasrec_beats_pop_on_validation(ml100k_split, tmp_path):
    rec = _sasrec(max_epochs=12, patience=12, lr=0.003).fit(ml100k_split, run_dir=tmp_path)
    ev = Evaluator(ml100k_split, Protocol())
    pop = ev.run(Pop().fit(ml100k_split), stage="valid", groups=False).overall["NDCG@10"]
    ours = ev.run(rec, stage="valid", groups=False).overall["NDCG@10"]
    assert ours > pop * 1.1, (ours, pop)
    info = json.loads((tmp_path / "train.json").read_text())
    assert info["val_ndcg10"] == pytest.approx(ours, rel=1e-4)  # the best checkpoint was restored


def test_resume_continues_from_the_saved_epoch(ml100k_split, tmp_path):
    _sasrec(max_epochs=2, patience=10).fit(ml100k_split, run_dir=tmp_path)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    _sasrec(max_epochs=4, patience=10).fit(ml100k_split, run_dir=tmp_path, resume=True)
    log = read_metrics(tmp_path).dropna(subset=["val_ndcg10"])
    assert log["epoch"].tolist() == [0, 1, 2, 3]  # epochs 0-1 were not trained again
    assert json.loads((tmp_path / "train.json").read_text())["epochs"] == 4
    times = json.loads((tmp_path / "epoch_times.json").read_text())  # one entry per epoch, both starts
    assert len(times["train"]) == len(times["ndcg"]) == 4
    assert times["ndcg"] == pytest.approx(log["val_ndcg10"].tolist(), abs=1e-6)


def test_resume_takes_the_learning_rate_of_the_new_config(ml100k_split, tmp_path):
    _sasrec(max_epochs=1, patience=10, lr=0.001).fit(ml100k_split, run_dir=tmp_path)
    _sasrec(max_epochs=2, patience=10, lr=0.0002).fit(ml100k_split, run_dir=tmp_path, resume=True)
    lrs = read_metrics(tmp_path)["lr-AdamW"].dropna().tolist()  # one row per epoch, both starts
    assert lrs == pytest.approx([0.001, 0.0002])  # not the optimizer state's saved 0.001


def test_plateau_schedule_lowers_the_rate_after_lr_patience_flat_validations(ml100k_split, tmp_path, monkeypatch):
    import padrec.train.trainer as trainer

    scores = iter([0.10, 0.20, 0.15, 0.14, 0.13, 0.12, 0.11, 0.10])
    monkeypatch.setattr(trainer, "validation_ndcg", lambda *a, **k: next(scores))
    plateau = {"patience": 10, "lr": 0.001, "lr_schedule": "plateau", "lr_factor": 0.5, "lr_patience": 1}
    fast = {"limit_train_batches": 2, **plateau}
    _sasrec(max_epochs=5, **fast).fit(ml100k_split, run_dir=tmp_path)
    # epochs 3 and 4 (0.15, 0.14) are the 2 validations without a better score (> lr_patience 1): halved after 4
    assert read_metrics(tmp_path)["lr-AdamW"].dropna().tolist() == pytest.approx([1e-3] * 4 + [5e-4])
    times_path = tmp_path / "epoch_times.json"  # as if killed after epoch 6 was timed but not checkpointed
    times_path.write_text(json.dumps({k: [*v, 1.0] for k, v in json.loads(times_path.read_text()).items()}))
    _sasrec(max_epochs=8, **fast).fit(ml100k_split, run_dir=tmp_path, resume=True)
    # same config: the resumed run starts at epoch 6 with the lowered rate and its plateau count (epoch 5's 0.13
    # was one flat validation, epoch 6's 0.12 the second: halved again)
    log = read_metrics(tmp_path)
    assert log["lr-AdamW"].dropna().tolist() == pytest.approx([1e-3] * 4 + [5e-4] * 2 + [2.5e-4] * 2)
    assert log.dropna(subset=["val_ndcg10"])["epoch"].tolist() == list(range(8))  # no epoch trained twice
    assert json.loads(times_path.read_text())["ndcg"] == pytest.approx([0.10, 0.20, 0.15, 0.14, 0.13, 0.12, 0.11, 0.10])


def test_resume_takes_the_patience_of_the_new_config(ml100k_split, tmp_path, monkeypatch):
    import padrec.train.trainer as trainer

    scores = iter([0.20, 0.10, 0.10, 0.10, 0.10])
    monkeypatch.setattr(trainer, "validation_ndcg", lambda *a, **k: next(scores))
    fast = {"limit_train_batches": 2, "max_epochs": 10}
    _sasrec(patience=1, **fast).fit(ml100k_split, run_dir=tmp_path)  # stops at the first flat validation (epoch 1)
    _sasrec(patience=3, **fast).fit(ml100k_split, run_dir=tmp_path, resume=True)  # 2 more flat ones allowed
    assert read_metrics(tmp_path).dropna(subset=["val_ndcg10"])["epoch"].tolist() == [0, 1, 2, 3]


def test_early_stopping_state_keeps_lightnings_key():
    # runs checkpointed before padrec's subclass (plain EarlyStopping) must resume with their early-stopping count
    from lightning.pytorch.callbacks import EarlyStopping

    from padrec.train.trainer import _ConfiguredEarlyStopping

    ours, lightnings = _ConfiguredEarlyStopping("val_ndcg10", mode="max"), EarlyStopping("val_ndcg10", mode="max")
    assert ours.state_key == lightnings.state_key


def test_unknown_schedule_is_rejected():
    from padrec.train.config import ConfigError, resolve

    with pytest.raises(ConfigError, match="lr_schedule"):
        resolve("sasrec", get_model_class("sasrec").config_cls, None, {"lr_schedule": "cosine"})


def test_val_every_validates_every_k_epochs_and_after_the_last(ml100k_split, tmp_path):
    _sasrec(max_epochs=5, patience=10, val_every=2).fit(ml100k_split, run_dir=tmp_path)
    log = read_metrics(tmp_path).dropna(subset=["val_ndcg10"])
    assert log["epoch"].tolist() == [1, 3, 4]  # 0-based epochs 2, 4 and the last one (5)
    times = json.loads((tmp_path / "epoch_times.json").read_text())
    assert len(times["train"]) == 5 and [x is None for x in times["ndcg"]] == [True, False, True, False, False]
    assert (tmp_path / "checkpoints" / "best.ckpt").exists()
    assert json.loads((tmp_path / "train.json").read_text())["best_epoch"] in (1, 3, 4)


@pytest.mark.slow
def test_two_process_ddp_agrees_with_one_process(ml100k_split, tmp_path):
    common = {"max_epochs": 6, "patience": 6, "lr": 0.003, "accelerator": "cpu"}
    one = _sasrec(**common).fit(ml100k_split, run_dir=tmp_path / "one")
    two = _sasrec(**common, devices=2, strategy="ddp_spawn", batch_size=32).fit(ml100k_split, run_dir=tmp_path / "two")
    ev = Evaluator(ml100k_split, Protocol())
    a = ev.run(one, stage="valid", groups=False).overall["NDCG@10"]
    b = ev.run(two, stage="valid", groups=False).overall["NDCG@10"]
    pop = ev.run(Pop().fit(ml100k_split), stage="valid", groups=False).overall["NDCG@10"]
    assert b > pop and abs(a - b) < 0.35 * max(a, b), (a, b, pop)


def test_val_users_validates_on_a_fixed_seeded_sample(ml100k_split):
    from padrec.eval.metrics import metrics_from_ranks
    from padrec.train.trainer import validation_ndcg, validation_users

    pop = Pop().fit(ml100k_split)
    n = len(ml100k_split.users("valid"))
    assert validation_users(ml100k_split, None, 0) is None and validation_users(ml100k_split, n + 5, 0) is None
    sample = validation_users(ml100k_split, 200, seed=3)
    assert len(set(sample.tolist())) == 200 and sample.max() < n
    assert (validation_users(ml100k_split, 200, seed=3) == sample).all()  # same users at every validation
    full = Evaluator(ml100k_split, Protocol()).ranks(pop, "valid")
    expected = metrics_from_ranks(full[sample], (10,))["NDCG@10"]
    assert validation_ndcg(pop, ml100k_split, max_users=200, seed=3) == pytest.approx(expected)
    everyone = metrics_from_ranks(full, (10,))["NDCG@10"]
    assert validation_ndcg(pop, ml100k_split) == pytest.approx(everyone)
    assert validation_ndcg(pop, ml100k_split, max_users=200, seed=4) != pytest.approx(expected)


def test_patience_counts_validations_not_epochs(ml100k_split, tmp_path):
    # validations after epochs 3, 6, 9; two epochs without validation must not use up patience=2
    _sasrec(max_epochs=9, patience=2, val_every=3, limit_train_batches=0.2).fit(ml100k_split, run_dir=tmp_path)
    assert json.loads((tmp_path / "train.json").read_text())["epochs"] == 9


def test_length_buckets_keep_every_user_and_crop_exactly(ml100k_split):
    import numpy as np
    import torch

    from padrec.train.trainer import LengthBucketSampler, NextItemBatches, sequence_loader

    lengths = np.random.default_rng(0).integers(1, 300, size=1000)
    stream = list(LengthBucketSampler(lengths, batch_size=32, window=4))
    assert sorted(stream) == list(range(1000))  # every user once per epoch
    batches = [np.array(stream[i : i + 32]) for i in range(0, 1000, 32)]
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.5 * np.ptp(lengths)  # a batch holds similar lengths (random batches span ~all)

    rec = _sasrec(length_buckets=True)
    rec._remember_items(ml100k_split)
    rec._build()
    rec.net.eval()
    loader = sequence_loader(rec, ml100k_split)
    assert isinstance(loader.sampler, LengthBucketSampler)
    per_batch = [int((tgt > 0).sum()) for _, tgt in loader]  # each position weighs alike across batches
    assert loader.positions_per_batch == pytest.approx(sum(per_batch) / len(per_batch))
    seqs = ml100k_split.train_sequences()
    users = [int(u) for u in np.argsort([len(s) for s in seqs], kind="stable")[:3]]  # shortest histories
    cropped = NextItemBatches(seqs, 50, crop=True)(users)
    full = NextItemBatches(seqs, 50)(users)
    assert cropped[0].shape[1] == max(len(seqs[u]) for u in users) - 1 < 49
    with torch.no_grad():  # dropping all-padding columns changes no loss
        a, n_a = rec.training_loss(cropped)
        b, n_b = rec.training_loss(full)
    assert n_a == n_b and torch.allclose(a, b, atol=1e-5)


def test_default_run_dirs_never_collide(tmp_path, monkeypatch):
    from padrec.train.trainer import default_run_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("time.strftime", lambda fmt: "20260101-000000")
    first = default_run_dir("toy", "sasrec")
    first.mkdir(parents=True)
    second = default_run_dir("toy", "sasrec")
    assert second != first and second.name == "sasrec-20260101-000000-2"
