"""Defaults that adapt to the data: max_len from the training histories, cropped batches, length buckets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import needs_data

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.models import Recommender, get_model_class
from padrec.models.sequential import MAX_LEN_PERCENTILE, auto_max_len
from padrec.train.config import TrainConfig, resolve
from padrec.train.trainer import LengthBucketSampler, MaskedItemBatches, NextItemBatches, sequence_loader

SEQUENTIAL = ("sasrec", "bert4rec", "gru4rec", "caser")
SMALL = {"d": 16}
QUICK = {"max_epochs": 1, "limit_train_batches": 3, "progress": False, "logger": ["csv"], "batch_size": 64}


@pytest.fixture(scope="module")
def ml100k_split():
    needs_data("ml-100k")
    return leave_one_out(load_dataset("ml-100k"))


@pytest.fixture(scope="module")
def short_split(tmp_path_factory):
    """ml-100k as an own-data file (so no dataset YAML applies) with each user's last 12 ratings: short histories."""
    folder = needs_data("ml-100k")
    df = pd.read_csv(folder / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"])
    df = df.sort_values(["user", "timestamp"], kind="stable").groupby("user").tail(12)
    path = tmp_path_factory.mktemp("own") / "short.csv"
    df.to_csv(path, index=False)
    return leave_one_out(load_dataset(path))


def test_auto_max_len_is_the_smallest_multiple_of_8_over_the_99th_percentile_capped():
    lengths = np.arange(1, 101)  # 99th percentile 99.01
    assert auto_max_len(lengths, cap=200) == 104
    assert auto_max_len(lengths, cap=50) == 50
    assert auto_max_len(np.array([1, 2, 3]), cap=200) == 8  # never below one multiple
    assert auto_max_len(np.array([0, 0]), cap=50) == 50  # nothing to measure: the cap
    assert MAX_LEN_PERCENTILE == 99


@pytest.mark.parametrize("model", SEQUENTIAL)
def test_unset_max_len_is_derived_at_fit_and_saved_resolved(model, short_split, tmp_path):
    cls = get_model_class(model)
    params, train = resolve(model, cls.config_cls, short_split.dataset.name, {})
    assert params.max_len is None  # neither model YAML nor (absent) dataset YAML set it
    lengths = np.diff(short_split.train_offsets)
    assert np.percentile(lengths, 99) <= 10 < cls.config_cls.MAX_LEN_CAP
    rec = cls(params={**params.model_dump(), **SMALL}, train={**train.model_dump(), **QUICK})
    rec.fit(short_split, run_dir=tmp_path)
    assert rec.max_len == 16 and rec.net is not None
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["params"]["max_len"] == 16
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["params"]["max_len"] == 16
    loaded = Recommender.load(tmp_path)  # no data needed to rebuild it
    assert loaded.max_len == 16
    hist = short_split.histories("test")[:5]
    assert torch.allclose(loaded.score(hist), rec.score(hist), atol=1e-5)


def test_model_yaml_dataset_yaml_and_overrides_win_over_the_data(short_split, tmp_path):
    cls = get_model_class("sasrec")
    assert resolve("sasrec", cls.config_cls, "amazon-beauty", {})[0].max_len == 50  # dataset YAML
    assert resolve("sasrec", cls.config_cls, "ml-1m", {})[0].max_len == 200  # published ml-1m setting
    assert resolve("gru4rec", get_model_class("gru4rec").config_cls, "ml-1m", {})[0].max_len == 200
    params, train = resolve("sasrec", cls.config_cls, short_split.dataset.name, {"model.max_len": 40})
    rec = cls(params={**params.model_dump(), **SMALL}, train={**train.model_dump(), **QUICK})
    rec.fit(short_split, run_dir=tmp_path)
    assert rec.max_len == 40 and json.loads((tmp_path / "config.json").read_text())["params"]["max_len"] == 40


def test_length_buckets_are_opt_in():
    assert TrainConfig().length_buckets is False  # they lagged random batches in NDCG@10 (bench/results/batching.md)
    cls = get_model_class("sasrec").config_cls
    assert resolve("sasrec", cls, "amazon-beauty", {})[1].length_buckets is False
    assert resolve("sasrec", cls, "ml-1m", {})[1].length_buckets is True  # its published rows used them
    assert resolve("sasrec", cls, "amazon-beauty", {"length_buckets": True})[1].length_buckets is True


def _fitted_shape(model: str, split, max_len: int = 50):
    cls = get_model_class(model)
    rec = cls(params={**SMALL, "max_len": max_len}, train={"progress": False, "batch_size": 32})
    rec._remember_items(split)
    rec._build()
    rec.net.eval()  # dropout off: in training only the shapes of its random draws differ
    return rec


@pytest.mark.parametrize("model", SEQUENTIAL)
def test_cropped_batches_give_the_same_loss_for_every_model(model, ml100k_split):
    rec = _fitted_shape(model, ml100k_split)
    seqs = ml100k_split.train_sequences()
    order = np.argsort([len(s) for s in seqs], kind="stable")
    longer = next(int(u) for u in order if 25 <= len(seqs[u]) <= 40)
    users = [int(u) for u in order[:6]] + [longer]  # short histories and one longer one
    if rec.net.bidirectional:
        batches = [MaskedItemBatches(seqs, 50, rec.net.mask_id, 0.3, seed=7, crop=c)(users) for c in (True, False)]
    else:
        batches = [NextItemBatches(seqs, 50, crop=c)(users) for c in (True, False)]
    (ci, ct), (fi, ft) = batches
    width = ci.shape[1]
    assert width < 50 and fi.shape[1] == 50
    # the cropped batch is the uncropped one without its all-padding columns (BERT4Rec: the same masks too)
    assert (fi[:, : 50 - width] == 0).all() and torch.equal(fi[:, 50 - width :], ci)
    assert torch.equal(ft[:, 50 - width :], ct) and int((ft[:, : 50 - width] > 0).sum()) == 0
    with torch.no_grad():
        a, n_a = rec.training_loss((ci, ct))
        b, n_b = rec.training_loss((fi, ft))
        hc, hf = rec.net.encode(ci), rec.net.encode(fi)[:, 50 - width :]
    assert n_a == n_b > 0
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (model, float(a), float(b))
    real = ci > 0
    assert torch.allclose(hc[real], hf[real], atol=1e-5)  # every real position's output, not only the loss


@pytest.mark.parametrize("buckets", [True, False])
def test_the_training_loader_always_crops_to_the_longest_history(buckets, ml100k_split):
    rec = _fitted_shape("sasrec", ml100k_split, max_len=200)
    rec.train_cfg = rec.train_cfg.model_copy(update={"length_buckets": buckets})
    loader = sequence_loader(rec, ml100k_split)
    assert isinstance(loader.sampler, LengthBucketSampler) == buckets
    widths = []
    for k, (inp, _) in enumerate(loader):
        assert (inp[:, 0] > 0).any()  # no all-padding column is left
        widths.append(inp.shape[1])
        if k == 8:
            break
    assert max(widths) <= 200
    if buckets:
        assert min(widths) < 200  # similar lengths together: some batches are narrower than max_len


def test_a_resumed_run_keeps_the_max_len_it_was_trained_with(short_split, tmp_path):
    cls = get_model_class("sasrec")
    first = cls(params={**SMALL, "max_len": 24}, train=QUICK)  # e.g. a run started before max_len was derived
    first.fit(short_split, run_dir=tmp_path)
    resumed = cls(params=SMALL, train={**QUICK, "max_epochs": 2})  # unset: the data alone would give 16
    resumed.fit(short_split, run_dir=tmp_path, resume=True)
    assert resumed.max_len == 24
    assert json.loads((tmp_path / "train.json").read_text())["epochs"] == 2
