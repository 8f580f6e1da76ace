"""Evaluator, protocols, stored negatives, groups and result records on tiny synthetic data."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pydantic
import pytest
import torch

from padrec.data.dataset import from_sequences
from padrec.data.split import leave_one_out, time_split
from padrec.eval.evaluator import Evaluator
from padrec.eval.negatives import draw_negatives, load_or_draw_negatives, negatives_path
from padrec.eval.protocol import Protocol
from padrec.eval.report import merge_bench, write_bench
from padrec.eval.results import Results
from padrec.models.base import Recommender

N_ITEMS = 40


def _dataset(seed: int = 0, n_users: int = 60, timestamps: bool = False):
    """Skewed (Zipf-like) item popularity, lengths 3..12, a few re-consumed items."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, N_ITEMS + 1)
    p /= p.sum()
    seqs = [list(rng.choice(N_ITEMS, size=rng.integers(3, 13), p=p)) for _ in range(n_users)]
    for k in range(N_ITEMS // 10):  # every item appears, so internal ids are 1..N_ITEMS
        seqs[k] = list(range(10 * k, 10 * k + 10))
    ts = [list(range(u, u + len(s))) for u, s in enumerate(seqs)] if timestamps else None
    return from_sequences("tiny", [f"u{u}" for u in range(n_users)], [[f"i{i}" for i in s] for s in seqs], ts)


@pytest.fixture(scope="module")
def split():
    return leave_one_out(_dataset())


class Constant(Recommender):
    """Same score for every item: must get no credit from ties."""

    name = "constant"

    def fit(self, split):
        return self

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.zeros(len(histories), N_ITEMS + 1)


class Oracle(Recommender):
    """Knows each user's target (by user id) but scores their history even higher."""

    name = "oracle"
    uses_user_ids = True

    def __init__(self, split, stage="test"):
        super().__init__()
        self.target = dict(zip(split.users(stage).tolist(), split.targets(stage).tolist(), strict=True))

    def fit(self, split):
        return self

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        s = torch.rand(len(histories), N_ITEMS + 1, generator=torch.Generator().manual_seed(1))
        for row, (h, u) in enumerate(zip(histories, users, strict=True)):
            s[row, torch.as_tensor(h)] = 10.0  # history first: masking must remove it
            s[row, self.target[int(u)]] = 5.0
        return s


class Wrong(Constant):
    name = "wrong"

    def score(self, histories):
        return torch.zeros(len(histories), N_ITEMS)


# -- protocol --------------------------------------------------------------------------------
def test_protocol_names_and_validation():
    assert Protocol().name("loo") == "full-loo"
    assert Protocol().name("time") == "full-time"
    assert Protocol(kind="sampled").name("loo") == "sampled100-uniform-loo"
    assert Protocol(kind="sampled", n_negatives=50, sampler="popularity").name("time") == ("sampled50-popularity-time")
    assert Protocol(ks=(20, 5, 10, 5)).ks == (5, 10, 20)
    for bad in ({"kind": "partial"}, {"sampler": "zipf"}, {"n_negatives": 0}, {"ks": ()}, {"typo": 1}):
        with pytest.raises(pydantic.ValidationError):
            Protocol(**bad)


# -- full ranking ----------------------------------------------------------------------------
def test_oracle_ranks_first_once_history_is_masked(split):
    res = Evaluator(split).run(Oracle(split), stage="test")
    assert res.overall["HR@5"] == 1.0 and res.overall["NDCG@5"] == 1.0 and res.overall["MRR@20"] == 1.0
    assert res.protocol == "full-loo" and res.n_users == len(split.users("test"))


def test_reconsumed_target_is_not_masked(split):
    reconsumed = [
        i for i, (u, t) in enumerate(zip(split.test_users, split.test_targets, strict=True))
        if t in split.histories("test", np.array([u]))[0]
    ]  # fmt: skip
    assert reconsumed, "fixture should contain re-consumed targets"
    ranks = Evaluator(split).ranks(Oracle(split), "test")
    assert (ranks[reconsumed] == 0).all()


def test_constant_model_gets_no_credit(split):
    res = Evaluator(split).run(Constant(), stage="valid")
    # pessimistic ties: the target ranks after every unmasked item (>= 40 - 12 others)
    assert res.overall["HR@20"] == 0.0 and res.overall["NDCG@20"] == 0.0


def test_batch_size_does_not_change_results(split):
    a = Evaluator(split, Protocol(batch_size=7)).run(Oracle(split, "valid"), stage="valid")
    b = Evaluator(split, Protocol(batch_size=4096)).run(Oracle(split, "valid"), stage="valid")
    assert a.overall == b.overall and a.groups == b.groups


def test_wrong_score_shape_is_a_clear_error(split):
    with pytest.raises(ValueError, match="n_items"):
        Evaluator(split).run(Wrong())
    with pytest.raises(ValueError):
        Evaluator(split).run(Constant(), stage="train")


def test_time_split_names_its_protocol():
    sp = time_split(_dataset(timestamps=True))
    res = Evaluator(sp).run(Constant(), groups=False)
    assert res.protocol == "full-time" and res.groups == {}


# -- groups ----------------------------------------------------------------------------------
def test_group_user_counts_add_up(split):
    res = Evaluator(split).run(Constant(), stage="test")
    g = res.groups
    bins = [n for n in g if n.startswith("bin") or n == "unseen"]
    lengths = [n for n in g if n.startswith("len")]
    assert bins and lengths
    assert sum(g[n]["users"] for n in bins) == res.n_users
    assert g["warm"]["users"] + g.get("cold", {"users": 0})["users"] == res.n_users
    assert sum(g[n]["users"] for n in lengths) == res.n_users
    pop_bins = split.popularity_bins[split.test_targets]
    assert g["warm"]["users"] == int((pop_bins <= 7).sum())
    freq = [n for n in g if n.startswith("freq")]
    assert sum(g[n]["users"] for n in freq) == res.n_users
    counts = split.train_item_counts[split.test_targets]
    assert g.get("freq1-10", {"users": 0})["users"] == int(((counts >= 1) & (counts <= 10)).sum())


def test_count_group_names():
    from padrec.data.split import count_group

    assert [count_group(n) for n in (0, 1, 10, 11, 50, 200, 201)] == [
        "freq0",
        "freq1-10",
        "freq1-10",
        "freq11-50",
        "freq11-50",
        "freq51-200",
        "freq>200",
    ]


# -- sampled negatives -----------------------------------------------------------------------
def test_negatives_exclude_the_users_items_and_are_distinct(split):
    for sampler in ("uniform", "popularity"):
        neg = draw_negatives(split, "test", n=15, sampler=sampler, seed=0)
        assert neg.shape == (len(split.test_users), 15)
        for row, u in enumerate(split.test_users):
            own = set(split.dataset.sequence(u).tolist())
            assert not own & set(neg[row].tolist())
            assert len(set(neg[row].tolist())) == 15 and neg[row].min() >= 1


def test_negatives_depend_only_on_the_seed(split):
    a = draw_negatives(split, "test", n=10, seed=3)
    assert np.array_equal(a, draw_negatives(split, "test", n=10, seed=3))
    assert not np.array_equal(a, draw_negatives(split, "test", n=10, seed=4))


def test_negatives_are_stored_and_reloaded(split, tmp_path):
    path = negatives_path(split, "test", 10, "uniform", 0, tmp_path)
    first = load_or_draw_negatives(split, "test", 10, "uniform", 0, tmp_path)
    assert path.is_file() and np.array_equal(np.load(path), first)
    marker = np.full_like(first, 7)  # a stored file wins over a fresh draw
    np.save(path, marker)
    assert np.array_equal(load_or_draw_negatives(split, "test", 10, "uniform", 0, tmp_path), marker)
    assert negatives_path(split, "valid", 10, "uniform", 0, tmp_path) != path
    assert negatives_path(split, "test", 10, "uniform", 1, tmp_path) != path
    other = leave_one_out(_dataset(seed=1))
    assert negatives_path(other, "test", 10, "uniform", 0, tmp_path) != path
    np.save(path, marker[:, :3])  # wrong shape: drawn again and replaced
    assert np.array_equal(load_or_draw_negatives(split, "test", 10, "uniform", 0, tmp_path), first)


def test_popularity_sampler_favours_popular_items(split):
    counts = split.train_item_counts
    uni = draw_negatives(split, "test", n=3, sampler="uniform", seed=0)
    pop = draw_negatives(split, "test", n=3, sampler="popularity", seed=0)
    assert counts[pop].mean() > 1.5 * counts[uni].mean()
    assert (counts[pop] > 0).all()  # never-trained items are never drawn


def test_too_many_negatives_is_a_clear_error(split):
    with pytest.raises(ValueError, match="fewer than"):
        draw_negatives(split, "test", n=N_ITEMS)


def test_sampled_protocol_uses_stored_negatives(split, tmp_path):
    proto = Protocol(kind="sampled", n_negatives=10)
    ev = Evaluator(split, proto, cache_root=tmp_path)
    res = ev.run(Oracle(split))
    assert res.protocol == "sampled10-uniform-loo" and res.overall["HR@5"] == 1.0
    assert Evaluator(split, proto, cache_root=tmp_path).run(Constant()).overall["HR@10"] == 0.0
    assert np.array_equal(ev.negatives("test"), load_or_draw_negatives(split, "test", 10, "uniform", 0, tmp_path))


# -- results ---------------------------------------------------------------------------------
def test_results_json_round_trip_and_record(split, tmp_path):
    res = Evaluator(split).run(Constant())
    d = json.loads(res.to_json())
    assert d["protocol"] == "full-loo" and "HR@10" in d["overall"] and "HR@10" in d["groups"]["warm"]
    assert Results.from_json(res.to_json()) == res
    table = res.table()
    assert "full-loo" in table.splitlines()[0] and "overall" in table and "NDCG@10" in table
    assert "| overall |" in res.to_markdown()
    rec = res.record(task="accuracy", device="cpu", seeds=[0], note="tiny")
    for key in ("task", "dataset", "model", "protocol", "metrics", "groups", "device", "seeds", "commit",
                "date", "note"):  # fmt: skip
        assert key in rec
    js, md = write_bench("tiny", [rec], "Tiny results", results_dir=tmp_path)
    assert json.loads(js.read_text())["records"][0]["metrics"]["HR@10"] == 0.0
    assert md.read_text().startswith("# Tiny results") and "| constant |" in md.read_text()


def _slow_markdown(records: list[dict]) -> str:
    import time

    time.sleep(0.05)  # between the read and the write: without the lock, concurrent writers overlap here
    return f"{len(records)} records\n"


def _add_records(args: tuple[str, int]) -> None:
    folder, worker = args
    for k in range(3):
        rec = {"task": "accuracy", "dataset": "d", "model": f"m{worker}-{k}", "seeds": [0]}
        merge_bench("tiny", [rec], lambda r: r["model"], _slow_markdown, results_dir=folder)


def test_merge_bench_keeps_every_concurrent_writers_records(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_add_records, [(str(tmp_path), w) for w in range(4)])
    models = sorted(r["model"] for r in json.loads((tmp_path / "tiny.json").read_text())["records"])
    assert models == sorted(f"m{w}-{k}" for w in range(4) for k in range(3))


def test_merge_bench_replaces_by_key_unless_keep_old_says_otherwise(tmp_path):
    def key(r: dict) -> str:
        return r["model"]

    def more_seeds(old: dict, new: dict) -> bool:
        return len(old["seeds"]) > len(new["seeds"])

    merge_bench(
        "tiny", [{"model": "a", "seeds": [0, 1, 2]}, {"model": "b", "seeds": [0]}], key, str, results_dir=tmp_path
    )
    out = merge_bench(
        "tiny", [{"model": "a", "seeds": [5]}, {"model": "b", "seeds": [7]}], key, str, more_seeds, tmp_path
    )
    assert out == [{"model": "a", "seeds": [0, 1, 2]}, {"model": "b", "seeds": [7]}]
    assert json.loads((tmp_path / "tiny.json").read_text())["records"] == out


def test_merge_bench_update_edits_stored_records_under_the_lock(tmp_path):
    def key(r: dict) -> str:
        return r["model"]

    merge_bench("tiny", [{"model": "a", "m": {"x": 1}}, {"model": "b", "m": {}}], key, str, results_dir=tmp_path)

    def add_y(records: list[dict]) -> None:
        for r in records:
            if r["model"] in ("a", "c"):
                r["m"]["y"] = 2

    out = merge_bench("tiny", [{"model": "c", "m": {}}], key, str, results_dir=tmp_path, update=add_y)
    assert out == [{"model": "a", "m": {"x": 1, "y": 2}}, {"model": "b", "m": {}}, {"model": "c", "m": {"y": 2}}]
    assert json.loads((tmp_path / "tiny.json").read_text())["records"] == out
