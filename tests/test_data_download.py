"""``download`` against a local HTTP server: success, checksum mismatch, truncation; nothing left behind."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from padrec.data.download import download
from padrec.data.errors import DataError
from padrec.data.registry import load_raw

U_DATA = "1\t10\t5\t100\n1\t20\t3\t90\n2\t10\t4\t50\n"
U_ITEM = (
    "10|Heat (1995)|01-Jan-1995||http://x|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "20|Up (2009)|||http://y|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)


def make_zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


GOOD = make_zip({"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM, "ml-100k/README": "hi"})


class Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self):
        body = self.files.get(self.path.split("?")[0].lstrip("/").removeprefix("truncated/"))
        if body is None:
            self.send_error(404, "Not Found")
            return
        truncated = self.path.startswith("/truncated/")
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body) + (1000 if truncated else 0)))
        self.end_headers()
        self.wfile.write(body)  # truncated: the connection closes 1000 bytes short

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    Handler.files = {
        "ml-100k.zip": GOOD,
        "wrong.zip": make_zip({"ml-100k/notes.txt": "no data here"}),
        "evil.zip": make_zip({"../evil.txt": "x", "u.data": U_DATA}),
        "broken.zip": GOOD[: len(GOOD) - 40] + b"\0" * 40,
        "reviews_Toys_and_Games_5.json.gz": b"not really gzip",
    }
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_clean(root: Path) -> None:
    """No dataset folder and no hidden temp/partial files: the data dir is gone or empty."""
    assert not root.exists() or list(root.iterdir()) == [], list(root.rglob("*"))


def test_download_success_extracts_and_loads(server, tmp_path):
    root = tmp_path / "data"
    path = download("ml-100k", root, url=f"{server}/ml-100k.zip", sha256=sha(GOOD), progress=False)
    assert path == root / "ml-100k"
    assert sorted(p.name for p in path.iterdir()) == ["README", "u.data", "u.item"]  # top folder dropped
    assert [p.name for p in root.iterdir()] == ["ml-100k"]  # no temp files left
    ds = load_raw("ml-100k", root)
    assert ds.n_users == 2 and ds.to_external(ds.sequence(0)) == ["20", "10"]
    assert ds.titles()[1:] == ["Up (2009)", "Heat (1995)"]
    # present already: no URL needed, nothing fetched
    assert download("ml-100k", root, progress=False) == path


def test_download_progress_goes_to_stderr(server, tmp_path, capsys):
    download("ml-100k", tmp_path, url=f"{server}/ml-100k.zip", progress=True)
    err = capsys.readouterr().err
    assert "downloading ml-100k.zip" in err and "MB" in err


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    root = tmp_path / "data"
    bad = "0" * 64
    with pytest.raises(DataError) as e:
        download("ml-100k", root, url=f"{server}/ml-100k.zip", sha256=bad, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{server}/ml-100k.zip: checksum mismatch")
    assert f"expected sha256 {bad}, got {sha(GOOD)}" in msg
    assert_clean(root)


def test_truncated_download_leaves_nothing(server, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        download("ml-100k", root, url=f"{server}/truncated/ml-100k.zip", progress=False)
    msg = str(e.value)
    assert "truncated" in msg and f"{len(GOOD):,} of {len(GOOD) + 1000:,} bytes" in msg
    assert_clean(root)


def test_existing_data_dir_keeps_its_other_content(server, tmp_path):
    root = tmp_path / "data"
    (root / "ml-1m").mkdir(parents=True)
    with pytest.raises(DataError):
        download("ml-100k", root, url=f"{server}/truncated/ml-100k.zip", progress=False)
    assert [p.name for p in root.iterdir()] == ["ml-1m"]


def test_archive_without_expected_files(server, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"does not contain the files 'ml-100k' needs \(u\.data"):
        download("ml-100k", root, url=f"{server}/wrong.zip", progress=False)
    assert_clean(root)


def test_zip_slip_refused(server, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"refusing to extract '\.\./evil\.txt'"):
        download("ml-100k", root, url=f"{server}/evil.zip", progress=False)
    assert_clean(root)
    assert not (tmp_path / "evil.txt").exists()


def test_corrupt_zip(server, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"broken\.zip: (not a valid zip archive|the download does not contain)"):
        download("ml-100k", root, url=f"{server}/broken.zip", progress=False)
    assert_clean(root)


def test_http_error(server, tmp_path):
    with pytest.raises(DataError, match=r"missing\.zip: download failed: HTTP 404"):
        download("ml-100k", tmp_path / "data", url=f"{server}/missing.zip", progress=False)
    assert_clean(tmp_path / "data")


def test_unknown_name_without_url(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'nope'.*padrec data download"):
        download("nope", tmp_path)


def test_any_name_with_url_and_plain_file(server, tmp_path):
    """A .gz is checked by reading it through; any name works when a URL is given."""
    with pytest.raises(DataError, match=r"reviews_Toys_and_Games_5\.json\.gz: not a valid gzip file"):
        download("amazon-toys", tmp_path, url=f"{server}/reviews_Toys_and_Games_5.json.gz", progress=False)
    path = download("my-data", tmp_path, url=f"{server}/ml-100k.zip", progress=False)
    assert (path / "u.data").read_text() == U_DATA
