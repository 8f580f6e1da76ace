"""Bad input gives one clear DataError naming the file and the line/field, and leaves nothing behind."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from padrec.data.errors import DataError
from padrec.data.loaders import load_interactions, load_mind, load_recbole, load_sequence_file
from padrec.data.prepare import PrepOptions, prepare
from padrec.data.registry import load_dataset, load_raw


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache folder that must still not exist after a failed load."""
    path = tmp_path / "cache"
    monkeypatch.setenv("PADREC_CACHE", str(path))
    return path


def assert_nothing_cached(cache: Path) -> None:
    assert not cache.exists() or not any(cache.iterdir()), list(cache.iterdir())


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_missing_columns(tmp_path, cache):
    path = write(tmp_path, "ratings.csv", "uid,item,timestamp\n1,2,3\n")
    with pytest.raises(DataError) as e:
        load_dataset(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}, line 1: missing column(s) 'user'")
    assert "'uid', 'item', 'timestamp'" in msg and "user_col=" in msg
    assert_nothing_cached(cache)


def test_non_numeric_timestamp(tmp_path, cache):
    path = write(tmp_path, "ratings.csv", "user,item,timestamp\n1,2,100\n1,3,101\n2,3,abc\n")
    with pytest.raises(DataError) as e:
        load_dataset(path)
    assert str(e.value) == (
        f"{path}, line 4, field 'timestamp': expected an integer (unix time) or an ISO 8601 date-time, got 'abc'"
    )
    assert e.value.line == 4 and e.value.field == "timestamp" and Path(e.value.path).name == "ratings.csv"
    assert_nothing_cached(cache)


def test_empty_file(tmp_path, cache):
    path = write(tmp_path, "ratings.csv", "")
    with pytest.raises(DataError, match=r"ratings\.csv: the file is empty"):
        load_dataset(path)
    seq = write(tmp_path, "seqs.txt", "\n\n")
    with pytest.raises(DataError, match=r"seqs\.txt: the file is empty"):
        load_dataset(seq)
    assert_nothing_cached(cache)


def test_header_only(tmp_path):
    path = write(tmp_path, "ratings.tsv", "user\titem\n")
    with pytest.raises(DataError, match=r"ratings\.tsv, line 2: no interaction rows after the header"):
        load_interactions(path)


def test_invalid_utf8_names_line_and_encoding(tmp_path, cache):
    path = write(tmp_path, "ratings.csv", b"user,item\n1,caf\xc3\xa9\n2,caf\xe9\n")
    with pytest.raises(DataError) as e:
        load_dataset(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}, line 3: byte 0xe9 at column 6 is not valid UTF-8")
    assert "expects UTF-8" in msg
    assert_nothing_cached(cache)


def test_duplicate_header(tmp_path):
    path = write(tmp_path, "ratings.csv", "user,item,item\n1,2,3\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert str(e.value) == f"{path}, line 1, field 'item': duplicate column name 'item' in the header"


def test_everything_filtered_away(tmp_path, cache):
    path = write(tmp_path, "shop.txt", "u1 a b\nu2 c d\n")
    with pytest.raises(DataError) as e:
        load_dataset(path, options=PrepOptions(item_core=2))
    msg = str(e.value)
    assert msg.startswith(f"{path}: no interactions left after preprocessing with item_core=2")
    assert "raw: 2 users, 4 items, 4 interactions" in msg
    assert_nothing_cached(cache)


def test_item_table_sharing_no_id_with_interactions(tmp_path):
    inter = write(tmp_path, "ratings.csv", "user,item\n1,a\n2,b\n")
    items = write(tmp_path, "items.csv", "item,title\nzz,Zed\nyy,Why\n")
    with pytest.raises(DataError) as e:
        load_interactions(inter, items_path=items)
    msg = str(e.value)
    assert msg.startswith(f"{items}, field 'item': none of its 2 item ids occurs in the interactions of ratings.csv")
    assert "'zz', 'yy'" in msg


def test_item_table_text_column_missing(tmp_path):
    inter = write(tmp_path, "ratings.csv", "user,item\n1,a\n")
    items = write(tmp_path, "items.csv", "item,title\na,A\n")
    with pytest.raises(DataError, match=r"items\.csv, line 1: missing column\(s\) 'blurb'.*text_cols="):
        load_interactions(inter, items_path=items, text_cols=["blurb"])


def test_item_table_duplicate_id(tmp_path):
    inter = write(tmp_path, "ratings.csv", "user,item\n1,a\n")
    items = write(tmp_path, "items.csv", "item,title\na,A\na,B\n")
    with pytest.raises(DataError, match=r"items\.csv, line 3, field 'item': item id 'a' is listed more than once"):
        load_interactions(inter, items_path=items)


def test_unknown_dataset_name(cache):
    with pytest.raises(DataError) as e:
        load_dataset("ml-2m")
    msg = str(e.value)
    assert "unknown dataset 'ml-2m'" in msg and "ml-1m, ml-100k, amazon-beauty" in msg
    assert "padrec data download" in msg
    assert isinstance(e.value, ValueError)
    assert_nothing_cached(cache)


def test_missing_dataset_folder_names_folder_and_files(tmp_path, cache):
    with pytest.raises(DataError) as e:
        load_dataset("ml-1m", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "ml-1m") in msg and "ratings.dat" in msg and "sequences.txt" in msg
    assert "padrec data download ml-1m" in msg
    assert_nothing_cached(cache)
    (tmp_path / "ml-1m.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"Found ml-1m\.zip there: unzip it in place"):
        load_raw("ml-1m", tmp_path)


def test_missing_file_path(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file or folder"):
        load_dataset(tmp_path / "nope.csv")


def test_unknown_extension(tmp_path):
    path = write(tmp_path, "data.xlsx", "x")
    with pytest.raises(DataError, match=r"data\.xlsx: unknown file type '\.xlsx'"):
        load_raw(path)


def test_wrong_field_count(tmp_path):
    path = write(tmp_path, "ratings.csv", "user,item\n1,2\n1,2,3\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 3: expected 2 fields \(as in the header\), found 3"):
        load_interactions(path)


def test_empty_id(tmp_path):
    path = write(tmp_path, "ratings.csv", "user,item\n1,2\n,3\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 3, field 'user': empty id"):
        load_interactions(path)


def test_bad_rating(tmp_path):
    path = write(tmp_path, "ratings.csv", "user,item,rating\n1,2,4.5\n1,3,five\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 3, field 'rating': expected a number, got 'five'"):
        load_interactions(path)


def test_parquet_missing_column_and_bad_time(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user": [1], "product": [2]}).to_parquet(path)
    with pytest.raises(DataError, match=r"log\.parquet: missing column\(s\) 'item'"):
        load_interactions(path)
    pd.DataFrame({"user": [1, 2], "item": [2, 3], "timestamp": ["5", "soon"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"log\.parquet, field 'timestamp': row 2: .* got 'soon'"):
        load_interactions(path)


def test_sequence_file_repeated_user(tmp_path):
    path = write(tmp_path, "seqs.txt", "u1 a b\nu2 c\nu1 d\n")
    with pytest.raises(DataError, match=r"seqs\.txt, line 3: user 'u1' appears again \(first on line 1\)"):
        load_sequence_file(path)


def test_ml100k_bad_timestamp(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    write(folder, "u.data", "1\t2\t3\t881250949\n1\t3\t4\tx\n")
    with pytest.raises(DataError, match=r"u\.data, line 2, field 'timestamp': .* got 'x'"):
        load_raw("ml-100k", tmp_path)


def test_ml1m_bad_movies_line(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    write(folder, "sequences.txt", "1 10 20\n")
    write(folder, "movies.dat", "10::Heat (1995)::Action\n20::Broken\n")
    with pytest.raises(DataError, match=r"movies\.dat, line 2: expected `MovieID::Title::Genres`, found 2"):
        load_raw("ml-1m", tmp_path)


def test_min_rating_without_ratings(tmp_path, cache):
    path = write(tmp_path, "shop.txt", "u1 a b\n")
    with pytest.raises(DataError, match=r"shop\.txt, field 'min_rating': min_rating=4\.0 needs star ratings"):
        load_dataset(path, options=PrepOptions(min_rating=4))
    assert_nothing_cached(cache)


def test_mind_bad_time(tmp_path):
    folder = tmp_path / "mind"
    folder.mkdir()
    write(folder, "news.tsv", "N1\tsports\tfootball\tGoal\t\t\t[]\t[]\n")
    write(folder, "behaviors.tsv", "1\tU1\t11/15/2019 8:55:22 AM\tN1\tN1-1\n2\tU2\tyesterday\t\tN1-1\n")
    with pytest.raises(DataError, match=r"behaviors\.tsv, line 2, field 'time': expected a time like"):
        load_mind(folder)


def test_recbole_untyped_header(tmp_path):
    write(tmp_path, "x.inter", "user_id\titem_id\n1\t2\n")
    with pytest.raises(DataError, match=r"x\.inter, line 1: header field 'user_id' has no ':type'"):
        load_recbole(tmp_path / "x")


def test_truncated_gzip(tmp_path):
    folder = tmp_path / "amazon-toys"
    folder.mkdir()
    data = gzip.compress(b'{"reviewerID": "a", "asin": "b", "unixReviewTime": 1}\n' * 100)
    write(folder, "reviews_Toys_and_Games_5.json.gz", data[: len(data) // 2])
    with pytest.raises(DataError, match=r"reviews_Toys_and_Games_5\.json\.gz: not a complete gzip file"):
        load_raw("amazon-toys", tmp_path)


def test_prepare_error_names_source_without_cache():
    from padrec.data.dataset import from_sequences

    ds = from_sequences("toy", ["u"], [["a"]], meta={"source_files": {"sequences": "toy.txt"}})
    with pytest.raises(DataError, match=r"^toy\.txt: no interactions left after preprocessing with min_user_len=2"):
        prepare(ds, PrepOptions(min_user_len=2))
