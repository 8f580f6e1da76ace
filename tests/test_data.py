"""Data layer: real dataset counts, stable ordering, preprocessing, cache, own-data loaders."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, needs_data

from padrec.data import cache as cache_mod
from padrec.data.dataset import PAD_TOKEN, from_sequences
from padrec.data.errors import DataError
from padrec.data.loaders import (
    load_amazon,
    load_interactions,
    load_mind,
    load_recbole,
    load_sequence_file,
    ratings_of,
)
from padrec.data.paths import cache_dir, data_dir
from padrec.data.prepare import BENCHMARK_OPTIONS, PrepOptions, prepare
from padrec.data.registry import DATASETS, dataset_names, load_dataset, load_raw, locate
from padrec.data.split import leave_one_out
from padrec.data.stats import describe


def counts(ds) -> tuple[int, int, int]:
    return ds.n_users, ds.n_items, ds.n_interactions


def seqs_ext(ds) -> dict[str, list[str]]:
    return {str(ds.user_ids[u]): ds.to_external(ds.sequence(u)) for u in range(ds.n_users)}


# --------------------------------------------------------------------------- real datasets


def test_ml1m_raw_counts_and_first_items(ml1m_raw):
    assert counts(ml1m_raw) == (6040, 3706, 1_000_209)
    assert ml1m_raw.user_ids[0] == "1"
    assert ml1m_raw.to_external(ml1m_raw.sequence(0)[:3]) == ["3186", "1721", "1022"]
    assert len(ml1m_raw.sequence(0)) == 53
    titles = ml1m_raw.titles()
    assert titles[0] == "" and all(titles[1:])  # every rated movie has a title from movies.dat
    row = ml1m_raw.item_table.iloc[ml1m_raw.item_index["2858"]]
    assert row["title"] == "American Beauty (1999)" and row["year"] == "1999" and "Drama" in row["genres"]
    assert ml1m_raw.item_table["item_id"].tolist() == list(ml1m_raw.item_ids)


def test_ml1m_benchmark_counts():
    needs_data("ml-1m")
    ds = load_dataset("ml-1m", DATA)
    assert counts(ds) == (6040, 3416, 999_611)
    assert ds.meta["options"] == BENCHMARK_OPTIONS["ml-1m"].model_dump()
    assert ds.meta["dropped"] == {"users": 0, "items": 290, "interactions": 598}
    assert ds.to_external(ds.sequence(0)[:3]) == ["3186", "1721", "1022"]
    assert ds.item_counts()[1:].min() >= 5
    split = leave_one_out(ds)
    assert len(split.test_users) == 6040
    assert split.test_targets[0] == ds.sequence(0)[-1] and split.valid_targets[0] == ds.sequence(0)[-2]


def test_beauty_counts_and_titles(beauty_raw):
    assert counts(beauty_raw) == (22_363, 12_101, 198_502)
    assert beauty_raw.user_ids[0] == "A1YJEY40YUW4SE"
    assert beauty_raw.to_external(beauty_raw.sequence(0)[:2]) == ["B004756YJA", "B004ZT0SSG"]
    titles = beauty_raw.titles()
    assert len(titles) == beauty_raw.n_items + 1
    assert sum(1 for t in titles[1:] if not t.strip()) == 7
    assert titles[1] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
    info = describe(beauty_raw)
    assert info["empty_titles"] == 7 and info["text_columns"] == ["title"]


def test_beauty_prepared_equals_raw():
    needs_data("amazon-beauty")
    ds = load_dataset("amazon-beauty", DATA)
    assert counts(ds) == (22_363, 12_101, 198_502)
    assert ds.meta["dropped"] == {"users": 0, "items": 0, "interactions": 0}


def test_ml100k_counts_ratings_and_time_order(ml100k_raw):
    ds = ml100k_raw
    assert counts(ds) == (943, 1682, 100_000)
    assert ds.user_ids[0] == "1" and ds.timestamps is not None
    r = ratings_of(ds)
    assert r is not None and len(r) == 100_000 and set(np.unique(r)) == {1, 2, 3, 4, 5}
    for u in range(0, ds.n_users, 50):
        s, e = ds.offsets[u], ds.offsets[u + 1]
        assert np.all(np.diff(ds.timestamps[s:e]) >= 0)
    assert ds.item_table.iloc[ds.item_index["1"]]["title"] == "Toy Story (1995)"
    assert ds.item_table.iloc[ds.item_index["1"]]["genres"] == "Animation, Children's, Comedy"
    assert describe(ds)["has_timestamps"] is True


def test_ml100k_ties_keep_file_order(ml100k_raw):
    """Rebuild the expected order with pandas' stable sort straight from u.data."""
    raw = pd.read_csv(DATA / "ml-100k" / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    raw = raw.iloc[np.argsort(raw["u"].to_numpy(), kind="stable")]
    expected = raw.sort_values("t", kind="stable").sort_values("u", kind="stable")
    exp_seq = expected.groupby("u", sort=False)["i"].apply(lambda s: [str(x) for x in s]).to_dict()
    got = seqs_ext(ml100k_raw)
    assert all(got[str(u)] == exp_seq[u] for u in exp_seq)


@pytest.mark.parametrize(("name", "expected"), [("amazon-sports", (35_598, 18_357, 296_337)),
                                                ("amazon-toys", (19_412, 11_924, 167_597))])  # fmt: skip
def test_amazon_id_only_counts(name, expected):
    needs_data(name)
    ds = load_raw(name, DATA)
    assert counts(ds) == expected
    assert describe(ds)["text_columns"] == [] and describe(ds)["empty_titles"] is None


def test_registry_table_and_aliases(tmp_path):
    assert dataset_names() == ["ml-1m", "ml-100k", "amazon-beauty", "amazon-sports", "amazon-toys", "mind"]
    for spec in DATASETS.values():
        assert spec.description and spec.downloads and spec.expected
    # short folder name works as well as the "-2014" one
    (tmp_path / "amazon-toys").mkdir()
    (tmp_path / "amazon-toys" / "user_sequence.txt").write_text("u1 a b c\nu2 b c\n")
    assert counts(load_raw("amazon-toys", tmp_path)) == (2, 3, 5)


def test_ml1m_ratings_dat_preferred_and_nested_zip_layout(tmp_path):
    """The GroupLens zip unpacked as-is gives ml-1m/ml-1m/ratings.dat; it wins over sequences.txt."""
    inner = tmp_path / "ml-1m" / "ml-1m"
    inner.mkdir(parents=True)
    (inner / "ratings.dat").write_text("2::10::5::300\n1::20::4::200\n1::10::3::100\n1::30::1::200\n")
    (inner / "movies.dat").write_bytes("10::Caf\xe9 (1999)::Drama|Comedy\n20::B (1990)::Horror\n".encode("latin-1"))
    (inner / "sequences.txt").write_text("9 99 98\n")
    ds = load_raw("ml-1m", tmp_path)
    assert seqs_ext(ds) == {"1": ["10", "20", "30"], "2": ["10"]}  # users by id, ties (200) in file order
    assert ratings_of(ds).tolist() == [3, 4, 1, 5]
    assert ds.titles()[1] == "Café (1999)" and ds.item_table["genres"][1] == "Drama, Comedy"
    assert ds.titles()[3] == ""  # item 30 is not in movies.dat
    folder, files = locate("ml-1m", tmp_path)
    assert folder == inner and set(files) == {"ratings", "movies"}
    prepared = load_dataset("ml-1m", tmp_path, PrepOptions(min_rating=3))
    assert seqs_ext(prepared) == {"1": ["10", "20"], "2": ["10"]}


# --------------------------------------------------------------------------- stable sort


def test_stable_sort_ties_keep_file_order(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,timestamp\nu1,a,5\nu1,b,3\nu2,x,1\nu1,c,3\nu1,d,1\nu2,y,1\n")
    ds = load_interactions(path)
    assert seqs_ext(ds) == {"u1": ["d", "b", "c", "a"], "u2": ["x", "y"]}
    assert ds.timestamps.tolist() == [1, 3, 3, 5, 1, 1]


def test_stable_sort_many_ties(tmp_path):
    """numpy's default quicksort is not stable beyond small sizes: 500 ties must keep file order."""
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in rng.permutation(500)]
    ts = rng.integers(0, 3, size=500)
    lines = ["user,item,timestamp"] + [f"u,{i},{t}" for i, t in zip(items, ts, strict=True)]
    path = tmp_path / "many.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = load_interactions(path)
    expected = [items[k] for k in np.argsort(ts, kind="stable")]
    assert ds.to_external(ds.sequence(0)) == expected


def test_no_time_column_keeps_file_order_and_groups_users(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("user\titem\nb\t1\na\t2\nb\t3\n")
    ds = load_interactions(path)
    assert seqs_ext(ds) == {"b": ["1", "3"], "a": ["2"]} and ds.timestamps is None
    assert list(ds.user_ids) == ["b", "a"]


# --------------------------------------------------------------------------- prepare


def _toy(with_ratings: bool = False):
    users = ["u0", "u1", "u2", "u3"]
    seqs = [["a", "b", "c", "d"], ["a", "b", "e"], ["a", "c", "b", "f", "g"], ["f"]]
    table = pd.DataFrame({"title": [f"T-{i}" for i in "abcdefg"]}, index=list("abcdefg"))
    ts = [[1, 2, 3, 4], [1, 2, 3], [1, 2, 3, 4, 5], [9]]
    ds = from_sequences("toy", users, seqs, ts, table, {"source_files": {"x": "toy.txt"}})
    if with_ratings:
        from padrec.data.loaders._common import attach_ratings

        attach_ratings(ds, np.array([5, 1, 4, 4, 5, 5, 2, 5, 3, 4, 5, 4, 1], dtype=np.float32))
    return ds


def test_prepare_default_is_identity_and_renumbers():
    ds = prepare(_toy())
    assert seqs_ext(ds) == seqs_ext(_toy())
    assert ds.item_ids[0] == PAD_TOKEN and list(ds.item_ids[1:]) == list("abcdefg")
    assert ds.meta["dropped"] == {"users": 0, "items": 0, "interactions": 0}


def test_prepare_kcore_reaches_fixed_point_and_keeps_table_aligned():
    ds = prepare(_toy(), PrepOptions(user_core=3, item_core=2))
    # f has 2 (u2, u3) but u3 has 1 item -> u3 goes, then f has 1 -> f goes; d/e/g have 1 -> go;
    # u1 is left with [a, b] (< 3) -> goes; then c has only u0,u2 -> stays.
    assert seqs_ext(ds) == {"u0": ["a", "b", "c"], "u2": ["a", "c", "b"]}
    assert ds.item_counts()[1:].min() >= 2 and ds.lengths.min() >= 3
    assert ds.titles() == ["", "T-a", "T-b", "T-c"]
    assert ds.timestamps.tolist() == [1, 2, 3, 1, 2, 3]
    assert ds.meta["dropped"] == {"users": 2, "items": 4, "interactions": 7}
    assert ds.meta["raw"] == {"users": 4, "items": 7, "interactions": 13}


def test_prepare_max_len_keeps_most_recent_and_min_user_len():
    ds = prepare(_toy(), PrepOptions(max_len=2, min_user_len=2))
    assert seqs_ext(ds) == {"u0": ["c", "d"], "u1": ["b", "e"], "u2": ["f", "g"]}
    assert list(ds.item_ids[1:]) == list("cdbefg")  # renumbered by first appearance
    assert ds.titles()[1:] == ["T-c", "T-d", "T-b", "T-e", "T-f", "T-g"]


def test_prepare_min_rating():
    ds = prepare(_toy(with_ratings=True), PrepOptions(min_rating=4))
    assert seqs_ext(ds) == {"u0": ["a", "c", "d"], "u1": ["a", "b"], "u2": ["a", "b", "f", "g"]}
    assert ratings_of(ds) is None  # prepared datasets do not carry ratings


def test_prepare_options_are_strict():
    with pytest.raises(ValueError):
        PrepOptions(item_cores=5)  # typo -> error, not silently ignored
    with pytest.raises(ValueError):
        PrepOptions(max_len=0)


def test_prepare_ml100k_min_rating_real(ml100k_raw):
    ds = prepare(ml100k_raw, PrepOptions(min_rating=4))
    assert ds.n_interactions == int((ratings_of(ml100k_raw) >= 4).sum()) == 55_375


# --------------------------------------------------------------------------- cache


def _write_seq(tmp_path: Path, text: str = "u1 a b c\nu2 b c d\nu3 a d\n") -> Path:
    path = tmp_path / "shop.txt"
    path.write_text(text)
    return path


def test_cache_second_load_is_served_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PADREC_CACHE", str(tmp_path / "cache"))
    path = _write_seq(tmp_path)
    first = load_dataset(path)
    assert first.meta["cache"]["hit"] is False
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(entries) == 1 and entries[0].name.startswith("shop-")
    manifest = json.loads((entries[0] / "manifest.json").read_text())
    assert manifest["sources"][0]["file"] == "shop.txt"
    assert manifest["sources"][0]["size"] == path.stat().st_size
    assert len(manifest["sources"][0]["sha256"]) == 64 and manifest["padrec_version"]
    assert manifest["options"] == PrepOptions().model_dump()
    for npy in entries[0].glob("*.npy"):
        np.load(npy, allow_pickle=False)  # nothing pickled

    def boom(*a, **k):
        raise AssertionError("loader called although the dataset is cached")

    monkeypatch.setattr("padrec.data.loaders.own.load_sequence_file", boom)
    monkeypatch.setattr("padrec.data.cache.prepare", boom)
    second = load_dataset(path)
    assert second.meta["cache"]["hit"] is True
    assert seqs_ext(second) == seqs_ext(first) and list(second.item_ids) == list(first.item_ids)
    assert second.item_table.equals(first.item_table)


def test_cache_changed_option_or_source_reprepares(tmp_path, monkeypatch):
    monkeypatch.setenv("PADREC_CACHE", str(tmp_path / "cache"))
    path = _write_seq(tmp_path)
    load_dataset(path)
    again = load_dataset(path, options=PrepOptions(item_core=2))
    assert again.meta["cache"]["hit"] is False
    assert seqs_ext(again) == {"u1": ["a", "b", "c"], "u2": ["b", "c", "d"], "u3": ["a", "d"]}
    path.write_text("u1 a b c\nu2 b c d\nu3 a d e\n")
    changed = load_dataset(path)
    assert changed.meta["cache"]["hit"] is False and changed.n_items == 5
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 3
    assert not list((tmp_path / "cache").glob(".*tmp"))  # no temp folders left


def test_cache_source_hash_memo_avoids_rehash(tmp_path, monkeypatch):
    monkeypatch.setenv("PADREC_CACHE", str(tmp_path / "cache"))
    path = _write_seq(tmp_path)
    load_dataset(path)
    monkeypatch.setattr(cache_mod, "sha256_file", lambda p: (_ for _ in ()).throw(AssertionError("re-hashed")))
    assert load_dataset(path).meta["cache"]["hit"] is True


def test_cache_damaged_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("PADREC_CACHE", str(tmp_path / "cache"))
    path = _write_seq(tmp_path)
    ds = load_dataset(path)
    entry = Path(ds.meta["cache"]["dir"])
    (entry / "items.npy").unlink()
    again = load_dataset(path)
    assert again.meta["cache"]["hit"] is False and (entry / "items.npy").exists()
    assert load_dataset(path).meta["cache"]["hit"] is True


def test_cache_never_writes_to_data_dir(tmp_path, monkeypatch):
    needs_data("ml-100k")
    monkeypatch.setenv("PADREC_CACHE", str(tmp_path / "cache"))
    before = sorted(os.listdir(DATA / "ml-100k"))
    ds = load_dataset("ml-100k", DATA)
    assert counts(ds) == (943, 1682, 100_000)
    assert sorted(os.listdir(DATA / "ml-100k")) == before
    assert Path(ds.meta["cache"]["dir"]).parent == tmp_path / "cache"


def test_paths_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PADREC_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("PADREC_CACHE", str(tmp_path / "c"))
    assert data_dir() == tmp_path / "d" and cache_dir() == tmp_path / "c"
    assert data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("PADREC_DATA")
    monkeypatch.delenv("PADREC_CACHE")
    assert data_dir().name == "data" and cache_dir().name == "prepared"
    assert "padrec" in str(data_dir()) and data_dir() != cache_dir()


# --------------------------------------------------------------------------- own data


def test_interactions_with_item_table_iso_time_and_ratings(tmp_path):
    inter = tmp_path / "events.csv"
    inter.write_text(
        "user_id,item_id,when,stars\n7,007,2024-01-02T10:00:00Z,5\n7,008,2024-01-01T10:00:00Z,2\n8,007,2024-01-03,4\n"
    )
    items = tmp_path / "items.csv"
    items.write_text('item_id,title,brand\n007,"Bond, James",MI6\n008,Q,\n')
    ds = load_interactions(
        inter, user_col="user_id", item_col="item_id", time_col="when", rating_col="stars",
        items_path=items, item_id_col="item_id",
    )  # fmt: skip
    assert seqs_ext(ds) == {"7": ["008", "007"], "8": ["007"]}  # ids stay strings ("007")
    assert ds.timestamps[0] == 1704103200
    assert ratings_of(ds).tolist() == [2, 5, 4]
    assert ds.titles() == ["", "Q", "Bond, James"] and ds.item_table["brand"].tolist() == ["", "", "MI6"]
    assert describe(ds)["text_columns"] == ["title", "brand"]


def test_interactions_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user": [1, 1, 2], "item": [10, 11, 10], "timestamp": [2, 1, 5]}).to_parquet(path)
    ds = load_dataset(path)
    assert seqs_ext(ds) == {"1": ["11", "10"], "2": ["10"]} and ds.name == "log"


def test_sequence_file_and_path_dispatch(tmp_path):
    path = _write_seq(tmp_path)
    assert seqs_ext(load_sequence_file(path)) == {
        "u1": ["a", "b", "c"],
        "u2": ["b", "c", "d"],
        "u3": ["a", "d"],
    }
    assert counts(load_raw(path)) == (3, 4, 8)


def test_recbole_atomic_files(tmp_path):
    d = tmp_path / "mini"
    d.mkdir()
    (d / "mini.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t300.0\n1\t11\t5\t100.0\n2\t10\t3\t50\n"
    )
    (d / "mini.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\tscore:float\n"
        "10\tHeat\t1995\tAction Crime\t1.5\n11\tUp\t2009\tAnimation\t2\n12\tUnrated\t2000\tDrama\t3\n"
    )
    ds = load_recbole(d)
    assert seqs_ext(ds) == {"1": ["11", "10"], "2": ["10"]}
    assert ds.titles() == ["", "Up", "Heat"]
    assert "score" not in ds.item_table and ds.item_table["genre"].tolist() == [
        "",
        "Animation",
        "Action Crime",
    ]
    assert ratings_of(ds).tolist() == [5, 4, 3]
    assert counts(load_dataset(d / "mini.inter")) == (2, 2, 3)
    assert counts(load_dataset(d)) == (2, 2, 3)


def test_mind_public_format(tmp_path):
    news = (
        "N1\tsports\tfootball\tGoal!\tA late goal.\thttp://x\t[]\t[]\n"
        "N2\tnews\tus\tElection\tVotes.\thttp://y\t[]\t[]\n"
        "N3\tfood\trecipes\tSoup\t\thttp://z\t[]\t[]\n"
        "N4\tfood\trecipes\tNever clicked\t\thttp://w\t[]\t[]\n"
    )
    behaviors = (
        "1\tU1\t11/15/2019 8:55:22 AM\tN1 N2\tN3-1 N4-0\n"
        "2\tU2\t11/14/2019 1:00:00 PM\t\tN2-1 N1-1 N4-0\n"
        "3\tU1\t11/14/2019 9:00:00 AM\tN1 N2\tN2-1\n"
        "4\tU3\t11/14/2019 9:00:00 AM\t\tN4-0\n"
    )
    split = tmp_path / "mind" / "MINDsmall_train"
    split.mkdir(parents=True)
    (split / "news.tsv").write_text(news)
    (split / "behaviors.tsv").write_text(behaviors)
    ds = load_mind(tmp_path / "mind")
    # U1: history, then the 9:00 AM click, then the 8:55 AM click of the next day
    assert seqs_ext(ds) == {"U1": ["N1", "N2", "N2", "N3"], "U2": ["N2", "N1"]}
    assert ds.meta["users_without_clicks"] == 1
    assert ds.titles()[1:] == ["Goal!", "Election", "Soup"]
    assert ds.item_table["categories"][1] == "sports, football"
    assert ds.timestamps[0] <= ds.timestamps[2]  # history predates clicks
    assert counts(load_raw("mind", tmp_path)) == (2, 3, 6)


def test_amazon_original_review_files(tmp_path):
    folder = tmp_path / "amazon-beauty"
    folder.mkdir()
    reviews = [
        {"reviewerID": "R1", "asin": "B2", "overall": 5.0, "unixReviewTime": 20},
        {"reviewerID": "R1", "asin": "B1", "overall": 3.0, "unixReviewTime": 10},
        {"reviewerID": "R2", "asin": "B1", "overall": 4.0, "unixReviewTime": 10},
    ]
    with gzip.open(folder / "reviews_Beauty_5.json.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in reviews) + "\n")
    with gzip.open(folder / "meta_Beauty.json.gz", "wt") as f:
        f.write("{'asin': 'B1', 'title': 'Lip balm', 'categories': [['Beauty', 'Lips']], 'brand': 'Acme'}\n")
        f.write("{'asin': 'B9', 'title': 'Not reviewed'}\n")
    ds = load_raw("amazon-beauty", tmp_path)
    assert seqs_ext(ds) == {"R1": ["B1", "B2"], "R2": ["B1"]}
    assert ds.titles() == ["", "Lip balm", ""]
    assert ds.item_table["categories"][1] == "Beauty, Lips" and ds.item_table["brand"][1] == "Acme"
    assert ratings_of(ds).tolist() == [3, 5, 4]
    assert load_amazon(folder).name == "amazon-beauty"


def test_dataset_folder_given_by_path_uses_benchmark_options(tmp_path):
    needs_data("ml-1m")
    ds = load_dataset(DATA / "ml-1m")
    assert ds.name == "ml-1m" and counts(ds) == (6040, 3416, 999_611)


def test_describe_keys(ml1m_raw):
    info = describe(ml1m_raw)
    assert set(info) == {
        "dataset", "users", "items", "interactions", "density", "avg_len", "median_len", "min_len",
        "max_len", "new_items", "has_timestamps", "text_columns", "empty_titles",
    }  # fmt: skip
    assert info["new_items"] == 0
    assert info["min_len"] == 20 and info["max_len"] == 2314 and info["median_len"] == 96
    assert info["has_timestamps"] is False and info["text_columns"] == ["title", "genres", "year"]
    assert abs(info["density"] - 1_000_209 / (6040 * 3706)) < 1e-12


def test_dataerror_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(DataError("a.csv", "bad", line=3, field="x")))
    assert str(err) == "a.csv, line 3, field 'x': bad" and err.line == 3 and err.field == "x"
