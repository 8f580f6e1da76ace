"""Scale: the fast columnar reader gives exactly the careful reader's dataset, evaluation never holds a
users × items matrix, and 2-process DDP trains each rank on its own shard and ends in one checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from padrec.data.errors import DataError
from padrec.data.loaders import _common, own
from padrec.data.loaders._common import ratings_of
from padrec.data.registry import load_dataset
from padrec.train.trainer import NextItemBatches

FIELDS = ("user_ids", "item_ids", "offsets", "items", "timestamps")


def _both(monkeypatch, path, **kw):
    """(fast result, careful result) of ``load_interactions``, and whether the fast reader took the file."""
    took = []
    real = own._fast

    def spy(*a, **k):
        got = real(*a, **k)
        took.append(got is not None)
        return got

    monkeypatch.setattr(own, "_fast", spy)
    fast = own.load_interactions(path, **kw)
    monkeypatch.setattr(own, "_fast", lambda *a, **k: None)
    slow = own.load_interactions(path, **kw)
    monkeypatch.setattr(own, "_fast", real)
    return fast, slow, took[0]


def _same(a, b) -> None:
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if x is None or y is None:
            assert x is None and y is None, f
            continue
        assert x.dtype == y.dtype and x.shape == y.shape and (x == y).all(), f
    assert a.item_table.equals(b.item_table)
    assert list(a.item_table.dtypes) == list(b.item_table.dtypes)
    ra, rb = ratings_of(a), ratings_of(b)
    assert (ra is None) == (rb is None) and (ra is None or np.array_equal(ra, rb))
    assert a.meta == b.meta


# (file name, content, whether the fast reader must take it: False = it must hand it to the careful reader)
CSV_CASES = [
    ("plain.csv", "user,item,timestamp\nu1,007,5\nu2,7,3\nu1,b,5\nu1,c,1\nu2,007,3\n", True),
    ("bom-crlf.csv", "\ufeffuser,item,timestamp\r\nu1,a,2\r\nu1,b,1\r\n\r\nu2,a,9\r\n", True),
    ("quoted.csv", 'user,item,timestamp\n"u,1",a,2\nu2,"b c",1\nu2,"x""y",0\n', False),  # quotes: careful
    ("quoted-plain.csv", 'user,item,timestamp\n"u1",a,2\nu2,"b,c",1\n"u1","b,c",1\n', True),
    ("ratings.tsv", "user\titem\trating\ttimestamp\n1\t10\t4.5\t100\n1\t11\t3\t99\n2\t10\t5\t7\n", True),
    ("notime.csv", "user,item\nb,1\na,2\nb,3\na,1\n", True),
    ("padded.csv", "user,item,timestamp\n u1 ,a,1\nu1, b,2\n", False),
    ("iso.csv", "user,item,timestamp\nu1,a,2024-01-02T00:00:00\nu1,b,2024-01-01\n", False),
    ("decimal.csv", "user,item,timestamp\nu1,a,1.5\nu1,b,1.2\n", False),
    ("blankrow.csv", "user,item,timestamp\nu1,a,1\n,,\nu1,b,0\n", False),
    ("unicode.csv", "user,item,timestamp\nJosé,café,1\nJosé,naïve,0\n", True),
    ("extra-cols.csv", "user,note,item,timestamp\nu1,hello,a,1\nu2,,b,1\nu1,x,b,0\n", True),
]


@pytest.mark.parametrize("name,text,fast", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_fast_reader_gives_the_careful_readers_dataset(tmp_path, monkeypatch, name, text, fast):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    a, b, took = _both(monkeypatch, path)
    assert took == fast
    _same(a, b)


def test_fast_reader_with_item_table_keeps_new_items(tmp_path, monkeypatch):
    inter = tmp_path / "events.csv"
    inter.write_text("uid,sku,ts\nu1,a,1\nu1,b,2\nu1,c,3\nu2,b,1\nu2,a,2\nu2,c,5\nu3,a,1\n", encoding="utf-8")
    items = tmp_path / "catalog.csv"
    items.write_text("sku,title,blurb\na,Apple,red\nnew,Brand new,fresh\nb,Banana,\nc,Cherry,x\n", encoding="utf-8")
    a, b, took = _both(monkeypatch, inter, user_col="uid", item_col="sku", time_col="ts", items_path=items)
    assert took
    _same(a, b)
    assert a.item_ids.tolist() == ["[PAD]", "a", "b", "c", "new"] and a.meta["new_items"] == 1


@pytest.mark.parametrize("kind", ["int", "str", "dict", "nullable"])
def test_fast_reader_parquet(tmp_path, monkeypatch, kind):
    users = [3, 1, 3, 2, 1, 3]
    items = [10, 11, 10, 12, 7, 11]
    df = pd.DataFrame({"user": users, "item": items, "timestamp": [5, 1, 2, 2, 1, 2], "rating": [1, 2, 3, 4, 5, 4]})
    if kind in ("str", "dict"):
        df["user"] = [f"0{u}" for u in users]
        df["item"] = df["item"].astype(str)
    if kind == "dict":
        df["item"] = df["item"].astype("category")
    if kind == "nullable":
        df["user"] = pd.array([*users[:-1], None], dtype="Int64")  # a missing id: the careful path's error
        path = tmp_path / "log.parquet"
        df.to_parquet(path)
        with pytest.raises(DataError, match=r"log\.parquet, field 'user': row 6: empty id"):
            own.load_interactions(path)
        return
    path = tmp_path / "log.parquet"
    df.to_parquet(path)
    a, b, took = _both(monkeypatch, path)
    assert took
    _same(a, b)


def test_bad_rows_still_get_located_errors_with_the_fast_reader(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,timestamp\nu1,a,1\nu2,b,soon\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"ratings\.csv, line 3, field 'timestamp': .* got 'soon'"):
        own.load_interactions(path)
    path.write_text("user,item,timestamp\nu1,a,1\nu2,b,2,9\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"ratings\.csv, line 3: expected 3 fields \(as in the header\), found 4"):
        own.load_interactions(path)
    path.write_bytes(b"user,item,timestamp\nu1,a,1\nu2,\xff,2\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 3: byte 0xff at column 4 is not valid UTF-8"):
        own.load_interactions(path)


def test_synthetic_log_fast_equals_careful_and_caches(tmp_path, monkeypatch):
    """A skewed synthetic log (the benchmark's generator): same dataset both ways, and through the cache."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_scaling import write_log

    path = tmp_path / "log.csv"
    info = write_log(path, 20_000, 3_000, seed=3)
    a, b, took = _both(monkeypatch, path)
    assert took and a.n_interactions == 20_000 and a.n_users == info["users"]
    _same(a, b)
    assert (np.diff(a.timestamps)[np.diff(np.repeat(np.arange(a.n_users), a.lengths)) == 0] >= 0).all()
    monkeypatch.setenv("PADREC_CACHE", str(tmp_path / "cache"))
    first, again = load_dataset(path), load_dataset(path)
    assert not first.meta["cache"]["hit"] and again.meta["cache"]["hit"]
    for f in FIELDS:
        assert np.array_equal(getattr(first, f), getattr(again, f)), f
    assert np.array_equal(first.items, a.items) and first.user_ids.tolist() == a.user_ids.tolist()


def test_fast_header_declines_what_it_cannot_read_alike(tmp_path):
    p = tmp_path / "x.csv"
    for text, ok in [("a,b\n1,2\n", True), ('"a",b\n1,2\n', False), ("a,a\n1,2\n", False), (",b\n1,2\n", False),
                     ("a,b", False), ("\n", False)]:  # fmt: skip
        p.write_text(text, encoding="utf-8")
        assert (_common.fast_header(p) is not None) == ok, text


# -- evaluation memory -----------------------------------------------------------------------------------------


def test_evaluation_scores_bounded_batches_never_users_by_items(monkeypatch):
    """Full ranking scores at most SCORE_BUDGET numbers per call (a 1e6-item catalogue: 67 users at a time),
    and the batch size never changes a rank."""
    from padrec.data.dataset import from_sequences
    from padrec.data.split import leave_one_out
    from padrec.eval import evaluator as ev
    from padrec.eval.protocol import Protocol
    from padrec.models.simple import Pop

    rng = np.random.default_rng(0)
    seqs = [[f"i{j}" for j in rng.integers(0, 900, size=rng.integers(3, 12))] for _ in range(400)]
    split = leave_one_out(from_sequences("toy", [f"u{k}" for k in range(400)], seqs))
    pop = Pop().fit(split)
    shapes: list[tuple[int, int]] = []
    real = pop.score

    def spy(hist, **kw):
        out = real(hist, **kw)
        shapes.append(tuple(out.shape))
        return out

    # the real budget: a 1e6-item catalogue is scored 67 users at a time (256 MB of float32)
    assert ev.SCORE_BUDGET // (1_000_000 + 1) == 67
    protocol = Protocol(batch_size=1024)
    full = ev.Evaluator(split, protocol).ranks(pop, "test")
    monkeypatch.setattr(pop, "score", spy)
    width = split.n_items + 1
    monkeypatch.setattr(ev, "SCORE_BUDGET", 20 * width + 5)  # room for 20 users' scores
    small = ev.Evaluator(split, protocol).ranks(pop, "test")
    assert np.array_equal(full, small)
    assert shapes and max(r for r, _ in shapes) == 20 and all(c == width for _, c in shapes)
    assert sum(r for r, _ in shapes) == len(split.users("test"))


# -- DDP -------------------------------------------------------------------------------------------------------

RECORD_ENV = "PADREC_TEST_RECORD_BATCHES"


class _RecordingBatches(NextItemBatches):
    """The trainer's collate, appending each batch's user ids to ``rank<r>.txt`` (spawned ranks too)."""

    def __call__(self, users):
        import os

        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        with open(os.path.join(os.environ[RECORD_ENV], f"rank{rank}.txt"), "a") as f:
            f.write(" ".join(map(str, users)) + "\n")
        return super().__call__(users)


def test_two_process_ddp_shards_users_and_ends_in_one_checkpoint(tmp_path, monkeypatch):
    """`accelerator=cpu devices=2 strategy=ddp_spawn`: in every epoch the two ranks train on disjoint halves of the
    users (length buckets included), validation is one full-ranking evaluation split between the ranks, and one
    best/last checkpoint and one train.json result."""
    import sys
    from pathlib import Path

    from padrec.data.split import leave_one_out
    from padrec.models import get_model_class
    from padrec.train import trainer
    from padrec.train.trainer import read_metrics, validation_ndcg

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_scaling import write_log

    monkeypatch.setenv("PADREC_CACHE", str(tmp_path / "cache"))
    write_log(tmp_path / "log.csv", 12_000, 1_500, seed=1)
    split = leave_one_out(load_dataset(tmp_path / "log.csv"))
    record = tmp_path / "batches"
    record.mkdir()
    monkeypatch.setenv(RECORD_ENV, str(record))
    monkeypatch.setattr(trainer, "NextItemBatches", _RecordingBatches)
    epochs, bs = 3, 16
    rec = get_model_class("sasrec")(
        params={"d": 16, "max_len": 20, "n_layers": 1},
        train={"progress": False, "batch_size": bs, "max_epochs": epochs, "patience": epochs, "lr": 0.003,
               "accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn", "logger": ["csv"]},
    )  # fmt: skip
    run = tmp_path / "run"
    rec.fit(split, run_dir=run)

    users = set(np.flatnonzero(np.diff(split.train_offsets) >= 2).tolist())
    per_rank = -(-len(users) // 2)  # DistributedSampler pads the shorter rank with a repeated index
    batches_per_epoch = -(-per_rank // bs)
    seen = {}
    for r in (0, 1):
        lines = (record / f"rank{r}.txt").read_text().splitlines()
        assert len(lines) == epochs * batches_per_epoch
        seen[r] = [set() for _ in range(epochs)]
        for k, line in enumerate(lines):
            seen[r][k // batches_per_epoch].update(map(int, line.split()))
    for e in range(epochs):
        a, b = seen[0][e], seen[1][e]
        assert a | b == users, f"epoch {e}: users missed"
        assert len(a & b) <= 1, f"epoch {e}: {len(a & b)} users trained on both ranks"

    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    log = read_metrics(run).dropna(subset=["val_ndcg10"])
    info = json.loads((run / "train.json").read_text())
    assert info["epochs"] == epochs and info["val_ndcg10"] == pytest.approx(float(log["val_ndcg10"].max())), info
    assert len(log) == epochs  # one validation per epoch, not one per rank
    # the reduced, sharded validation is the single-process number of the restored best model
    assert validation_ndcg(rec, split) == pytest.approx(float(log["val_ndcg10"].max()), rel=1e-5)
