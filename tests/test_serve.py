"""HTTP serving through a real uvicorn server on 127.0.0.1 (a thread per test, a subprocess for the CLI).

One small synthetic PAD run (a few epochs, seconds) serves every test; tests that add items work on a
copy of its ``pad/`` directory. Its ``pretrain/`` directory is a plain SASRec run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from padrec.data.dataset import from_sequences  # noqa: E402
from padrec.data.split import leave_one_out  # noqa: E402
from padrec.models import Recommender  # noqa: E402
from padrec.pad.pipeline import run_pad  # noqa: E402
from padrec.serve.app import create_app  # noqa: E402
from padrec.serve.batching import Batcher, cropped_scorer  # noqa: E402
from padrec.serve.server import ServerThread  # noqa: E402
from padrec.serve.service import LOG_NAME, RecService, ServeError  # noqa: E402

FAST = {
    "backbone.d": 16,
    "backbone.max_len": 10,
    "backbone.n_layers": 1,
    "backbone.max_epochs": 3,
    "backbone.lr": 0.01,
    "backbone.progress": False,
    "max_epochs": 3,
    "lr": 0.01,
    "progress": False,
    "batch_size": 32,
}
N_ITEMS, N_CLUSTERS, DIM = 60, 6, 8


@pytest.fixture(scope="module")
def toy():
    """Users walk through item clusters; an item's 'text' vector is its cluster centre plus noise."""
    rng = np.random.default_rng(0)
    cluster = np.arange(N_ITEMS) % N_CLUSTERS
    seqs = []
    for _ in range(80):
        c = rng.integers(N_CLUSTERS)
        seqs.append([f"i{i}" for i in rng.choice(np.flatnonzero(cluster == c), size=rng.integers(5, 10))])
    split = leave_one_out(from_sequences("toy", [f"u{u}" for u in range(80)], seqs))
    centres = rng.normal(size=(N_CLUSTERS, DIM)).astype(np.float32)
    text = np.zeros((split.n_items + 1, DIM), dtype=np.float32)
    for i, e in enumerate(split.dataset.item_ids[1:], 1):
        text[i] = centres[int(e[1:]) % N_CLUSTERS] + 0.1 * rng.normal(size=DIM)
    return split, centres, text


@pytest.fixture(scope="module")
def base_run(toy, tmp_path_factory) -> Path:
    split, _, text = toy
    out = tmp_path_factory.mktemp("serve-run")
    run_pad(split, out, overrides=FAST, text=text, evaluate=False)
    return out


@pytest.fixture
def pad_dir(base_run, tmp_path) -> Path:
    """A private copy of the PAD run (tests add items to it)."""
    return Path(shutil.copytree(base_run / "pad", tmp_path / "pad"))


@contextmanager
def serving(run_dir: Path, **kw):
    with ServerThread(create_app(RecService(run_dir, **kw))) as server, httpx.Client(base_url=server.url) as client:
        yield client


def user_history(split, cluster: int) -> list[str]:
    return [f"i{i}" for i in range(cluster, N_ITEMS, N_CLUSTERS)][:4]


def test_recommend_matches_the_python_api_and_reports_health(base_run, toy):
    split, _, _ = toy
    model = Recommender.load(base_run / "pad")
    hist = [user_history(split, 0), user_history(split, 3)[:2]]
    with serving(base_run / "pad") as c:
        r = c.post("/recommend", json={"history": hist[0], "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["exact"] is True and body["model"] == "pad"
        want = model.recommend([hist[0]], k=5)[0]
        assert [x["item_id"] for x in body["items"]] == [x["item_id"] for x in want]
        assert np.allclose([x["score"] for x in body["items"]], [x["score"] for x in want], atol=1e-5)
        assert not set(hist[0]) & {x["item_id"] for x in body["items"]}  # exclude_seen by default

        r = c.post("/recommend/batch", json={"histories": hist, "k": 3, "exclude_seen": False})
        assert r.status_code == 200, r.text
        assert [[x["item_id"] for x in row] for row in r.json()["results"]] == [
            [x["item_id"] for x in row] for row in model.recommend(hist, k=3, exclude_seen=False)
        ]
        # k above the catalogue (but within --max-k) returns the whole catalogue minus the history
        r = c.post("/recommend", json={"history": hist[0], "k": 500})
        assert r.status_code == 200 and len(r.json()["items"]) == N_ITEMS - len(hist[0])

        health = c.get("/health").json()
        assert health["model"] == "pad" and health["dataset"] == "toy" and health["n_items"] == N_ITEMS
        assert health["can_add_items"] is True
        internal = int(model.to_internal(["i7"])[0])
        assert c.get("/items/i7").json() == {
            "id": "i7",
            "title": model.titles[internal],
            "internal_id": internal,
            "source": "trained",
            "text": None,
        }
        assert {"/recommend", "/recommend/batch", "/items", "/health", "/metrics"} <= set(
            c.get("/openapi.json").json()["paths"]
        )
        m = c.get("/metrics").json()
        assert m["routes"]["POST /recommend"]["requests"] == 2 and m["errors_5xx"] == 0
        assert m["routes"]["POST /recommend"]["latency_ms"]["p99"] > 0


BAD_RECOMMEND = [
    # (body: dict or raw bytes, status, code, text in detail)
    (b'{"history": ["i1", ', 400, "malformed_json", "malformed JSON"),
    (b"", 422, "invalid_request", "body is missing"),
    ({"history": []}, 422, "empty_history", "history is empty"),
    ({"history": ["i1", "nope", "i2", "also-nope"]}, 422, "unknown_items", "nope, also-nope"),
    ({"history": ["i1"], "k": 0}, 422, "invalid_request", "greater than or equal to 1"),
    ({"history": ["i1"], "k": -3}, 422, "invalid_request", "body.k"),
    ({"history": ["i1"], "k": 10**9}, 422, "invalid_k", "limit of 1000"),
    ({"history": ["i1"], "k": "10"}, 422, "invalid_request", "body.k: Input should be a valid integer"),
    ({"history": "i1"}, 422, "invalid_request", "body.history: Input should be a valid list"),
    ({"history": [1, 2]}, 422, "invalid_request", "body.history.0: Input should be a valid string"),
    ({"history": ["i1"], "exclude_seen": "yes"}, 422, "invalid_request", "body.exclude_seen"),
    ({"history": ["i1"], "kk": 3}, 422, "invalid_request", "body.kk: Extra inputs are not permitted"),
    ({"histroy": ["i1"]}, 422, "invalid_request", "body.history: Field required"),
    ([["i1"]], 422, "invalid_request", "valid dictionary"),
    ({"history": ["i1"], "exact": False}, 422, "no_index", "no index"),
]


def test_bad_recommend_requests_get_clear_4xx_json(base_run):
    with serving(base_run / "pad") as c:
        for body, status, code, text in BAD_RECOMMEND:
            if isinstance(body, bytes):
                r = c.post("/recommend", content=body, headers={"content-type": "application/json"})
            else:
                r = c.post("/recommend", json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["code"] == code and text in r.json()["detail"], (body, r.json())
        r = c.post("/recommend", json={"history": ["i1", "x9", "x9"]})
        assert r.json()["unknown_ids"] == ["x9"]
        for body, code in (
            ({"histories": [["i1"], []]}, "empty_history"),
            ({"histories": []}, "empty_batch"),
            ({"histories": [["i1"], ["zz"]]}, "unknown_items"),
            ({"histories": ["i1"]}, "invalid_request"),
        ):
            r = c.post("/recommend/batch", json=body)
            assert r.status_code == 422 and r.json()["code"] == code, r.text
        assert c.get("/items/nope").status_code == 404 and c.get("/items/nope").json()["unknown_ids"] == ["nope"]
        assert c.get("/metrics").json()["errors_5xx"] == 0


@pytest.mark.parametrize("max_batch", [1, 64])
def test_unexpected_errors_are_a_short_logged_500(base_run, caplog, max_batch):
    service = RecService(base_run / "pad")

    def boom(*a, **kw):
        raise RuntimeError("secret internals")

    service.snapshot.model.score = boom  # batched or not, scoring fails (on the batcher's thread when batched)
    with ServerThread(create_app(service, max_batch=max_batch)) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/recommend", json={"history": ["i1"]})
        assert r.status_code == 500 and r.json()["code"] == "internal" and "secret" not in r.text
        assert c.get("/metrics").json()["errors_5xx"] == 1
    assert "secret internals" in caplog.text


def test_added_item_is_recommended_at_once_and_survives_a_restart(pad_dir, toy):
    split, centres, _ = toy
    hist = user_history(split, 2)
    match = (centres[2] + 0.05).tolist()
    other = centres[(2 + 3) % N_CLUSTERS].tolist()
    with serving(pad_dir) as c:
        r = c.post(
            "/items",
            json=[
                {"id": "new-match", "text": "like cluster 2", "title": "A new thing", "vector": match, "brand": "acme"},
                {"id": "new-other", "text": "unlike it", "vector": other},
            ],
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"added": 2, "updated": 0, "n_items": N_ITEMS + 2, "ids": ["new-match", "new-other"]}
        # an update of a trained item: new text vector and title, same id
        r = c.post("/items", json={"id": "i5", "text": "t", "title": "Renamed", "vector": other})
        assert r.json()["updated"] == 1 and r.json()["n_items"] == N_ITEMS + 2
        ranked = c.post("/recommend", json={"history": hist, "k": 1000}).json()["items"]
        by_id = {x["item_id"]: x for x in ranked}
        assert "new-match" in by_id and by_id["new-match"]["title"] == "A new thing"
        assert np.isfinite(by_id["new-match"]["score"])
        # a history may now contain the new item
        assert c.post("/recommend", json={"history": [*hist, "new-match"], "k": 3}).status_code == 200
        assert c.get("/items/new-match").json() == {
            "id": "new-match",
            "title": "A new thing",
            "internal_id": N_ITEMS + 1,
            "source": "added",
            "text": "like cluster 2",
            "brand": "acme",
        }
        assert c.get("/items/i5").json()["source"] == "updated"
        m = c.get("/metrics").json()
        assert (m["items_added"], m["items_updated"], m["add_requests"]) == (2, 1, 2)
    # same scores as growing the model in-process with the model's own method
    ref = Recommender.load(pad_dir)
    ref.add_item_vectors(["new-match", "new-other"], np.array([match, other]), ["A new thing", ""])
    ref.add_item_vectors(["i5"], np.array([other]), ["Renamed"])
    want = {x["item_id"]: x["score"] for x in ref.recommend([hist], k=1000)[0]}
    assert {k: pytest.approx(v, abs=1e-5) for k, v in want.items()} == {k: x["score"] for k, x in by_id.items()}

    assert (pad_dir / LOG_NAME).exists() and json.loads((pad_dir / "items.json").read_text())["item_ids"][
        -1
    ] != "new-other"
    with serving(pad_dir) as c:  # restart: replayed from the log, trained files untouched
        assert c.get("/health").json()["n_items"] == N_ITEMS + 2
        assert c.get("/items/new-match").json()["brand"] == "acme"
        assert c.get("/items/i5").json()["title"] == "Renamed"
        again = c.post("/recommend", json={"history": hist, "k": 1000}).json()["items"]
        assert [x["item_id"] for x in again] == [x["item_id"] for x in ranked]
        assert np.allclose([x["score"] for x in again], [x["score"] for x in ranked], atol=1e-6)


def test_bad_item_posts_get_clear_4xx_and_change_nothing(pad_dir):
    with serving(pad_dir, embed=None) as c:
        assert c.get("/health").json()["text_encoder"] is None
        for body, code, text in (
            ({"id": "n1", "text": "words"}, "missing_vector", f"{DIM} floats): this server has no text encoder"),
            ({"id": "n1", "vector": [1.0] * 3}, "bad_vector", f"{DIM} values"),
            ({"id": "n1", "vector": ["a"] * DIM}, "invalid_request", "body.vector.0: Input should be a valid number"),
            ([{"id": "n1", "vector": [0.0] * DIM}, {"id": 5}], "invalid_request", "body.1.id"),
            ({"text": "no id"}, "invalid_request", "body.id: Field required"),
            ([{"id": "n1", "vector": [0.0] * DIM}, {"id": "n1", "vector": [0.0] * DIM}], "duplicate_items", "n1"),
            ([], "no_items", "no items"),
        ):
            r = c.post("/items", json=body)
            assert r.status_code == 422 and r.json()["code"] == code and text in r.json()["detail"], (body, r.text)
        nan = b'{"id": "n1", "vector": [NaN, 0, 0, 0, 0, 0, 0, 0]}'
        r = c.post("/items", content=nan, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "finite" in r.json()["detail"], r.text
        assert c.get("/health").json()["n_items"] == N_ITEMS and c.get("/metrics").json()["errors_5xx"] == 0
    assert not (pad_dir / LOG_NAME).exists()


def test_items_posted_as_text_are_embedded_logged_as_vectors_and_replayed_without_the_encoder(pad_dir, toy):
    split, centres, _ = toy

    def fake_encoder(texts):
        """'cluster c' -> that cluster's centre: stands in for the run's language model."""
        return np.stack([centres[int(t.split()[-1])] for t in texts])

    hist = user_history(split, 2)
    with serving(pad_dir, embed=fake_encoder) as c:
        assert c.get("/health").json()["text_encoder"] == "fake_encoder"
        r = c.post("/items", json={"id": "txt", "text": "cluster 2"})
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
        assert c.get("/items/txt").json()["title"] == "cluster 2"  # as PAD.add_items: title defaults to the text
        ranked = {
            x["item_id"]: x["score"] for x in c.post("/recommend", json={"history": hist, "k": 100}).json()["items"]
        }
    ref = Recommender.load(pad_dir)
    ref.add_item_vectors(["txt"], centres[2:3], ["cluster 2"])
    want = {x["item_id"]: x["score"] for x in ref.recommend([hist], k=100)[0]}
    assert ranked == {k: pytest.approx(v, abs=1e-5) for k, v in want.items()}
    with serving(pad_dir, embed=None) as c:  # the log holds the vector: no encoder needed to restart
        assert c.get("/items/txt").json()["source"] == "added"
    # an encoder of the wrong width, or none that loads: clear 422s, nothing added
    with serving(pad_dir, embed=lambda texts: np.zeros((len(texts), DIM + 1))) as c:
        r = c.post("/items", json={"id": "t2", "text": "x"})
        assert r.status_code == 422 and r.json()["code"] == "encoder_mismatch" and f"text dim {DIM}" in r.text
    with serving(pad_dir, embed=str(pad_dir / "no-such-encoder")) as c:
        r = c.post("/items", json={"id": "t2", "text": "x"})
        assert r.status_code == 422 and r.json()["code"] == "missing_vector" and "unavailable" in r.text
        assert c.get("/health").json()["n_items"] == N_ITEMS + 1


def test_sasrec_refuses_new_items_and_offers_an_exact_checked_index(base_run, toy):
    split, _, _ = toy
    with serving(base_run / "pretrain") as c:
        r = c.post("/items", json={"id": "n1", "text": "x", "vector": [0.0] * DIM})
        assert r.status_code == 409 and r.json()["model"] == "sasrec" and "'sasrec' cannot" in r.json()["detail"]
        assert c.get("/health").json()["can_add_items"] is False
    with pytest.raises(ValueError, match="dot product"):
        RecService(base_run / "pad", ann="hnsw")
    hist = [user_history(split, c) for c in range(N_CLUSTERS)]
    with serving(base_run / "pretrain", ann="flat") as c:  # flat = brute force inside faiss: must equal exact
        approx = c.post("/recommend/batch", json={"histories": hist, "k": 10}).json()
        exact = c.post("/recommend/batch", json={"histories": hist, "k": 10, "exact": True}).json()
        assert approx["exact"] is False and exact["exact"] is True
        for a, e in zip(approx["results"], exact["results"], strict=True):
            assert [x["item_id"] for x in a] == [x["item_id"] for x in e]
            assert np.allclose([x["score"] for x in a], [x["score"] for x in e], atol=1e-4)
    service = RecService(base_run / "pretrain", ann="hnsw")
    got = service.recommend(hist, k=10).items
    want = service.recommend(hist, k=10, exact=True).items
    recall = np.mean(
        [len({x["item_id"] for x in g} & {x["item_id"] for x in w}) / 10 for g, w in zip(got, want, strict=True)]
    )
    assert recall >= 0.9


def test_concurrent_adds_and_recommends_lose_nothing(pad_dir, toy):
    split, centres, _ = toy
    n_adders, adds_each = 4, 6
    errors: list[str] = []
    done = threading.Event()
    seen_sizes: list[int] = []

    def adder(t: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for j in range(adds_each):
                items = [{"id": f"t{t}-{j}-{x}", "vector": centres[(t + j) % N_CLUSTERS].tolist()} for x in range(2)]
                r = c.post("/items", json=items)
                if r.status_code != 200:
                    errors.append(r.text)

    def reader(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not done.is_set():
                r = c.post("/recommend", json={"history": user_history(split, 1), "k": 1000})
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    seen_sizes.append(len(r.json()["items"]))

    with ServerThread(create_app(RecService(pad_dir))) as server, httpx.Client(base_url=server.url) as c:
        readers = [threading.Thread(target=reader, args=(server.url,)) for _ in range(3)]
        adders = [threading.Thread(target=adder, args=(t, server.url)) for t in range(n_adders)]
        for th in readers + adders:
            th.start()
        for th in adders:
            th.join(60)
        done.set()
        for th in readers:
            th.join(60)
        total = n_adders * adds_each * 2
        assert not errors, errors[:3]
        assert c.get("/health").json()["n_items"] == N_ITEMS + total
        ids = [f"t{t}-{j}-{x}" for t in range(n_adders) for j in range(adds_each) for x in range(2)]
        assert all(c.get(f"/items/{i}").status_code == 200 for i in ids)
        assert c.get("/metrics").json()["errors_5xx"] == 0
    # every response saw a whole model: the catalogue minus the history, at one of the published sizes
    assert seen_sizes and all((s - (N_ITEMS - 4)) % 2 == 0 and 0 <= s - (N_ITEMS - 4) <= total for s in seen_sizes)
    assert len((pad_dir / LOG_NAME).read_text().splitlines()) == n_adders * adds_each
    restarted = RecService(pad_dir)
    assert restarted.snapshot.model.n_items == N_ITEMS + total and set(ids) <= set(restarted.snapshot.index)


def test_readers_keep_their_snapshot_while_an_add_publishes_a_new_one(pad_dir):
    service = RecService(pad_dir)
    old = service.snapshot
    service.add_items([{"id": "n1", "vector": [0.5] * DIM}])
    assert old.model.n_items == N_ITEMS and old.version == 0  # copy-on-write: the old model never grew
    assert service.snapshot.model.n_items == N_ITEMS + 1 and service.snapshot.version == 1


def test_a_torn_log_tail_is_dropped_and_a_corrupt_line_is_refused(pad_dir):
    service = RecService(pad_dir)
    service.add_items([{"id": "n1", "vector": [0.5] * DIM}])
    log = pad_dir / LOG_NAME
    good = log.read_bytes()
    log.write_bytes(good + b'{"time": 1, "items": [{"id": "n2", "vec')  # a crash mid-append
    again = RecService(pad_dir)
    assert again.snapshot.model.n_items == N_ITEMS + 1 and log.read_bytes() == good
    log.write_bytes(b"garbage\n" + good)
    with pytest.raises(RuntimeError, match="line 1 is corrupt"):
        RecService(pad_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_a_run_in_a_subprocess_and_keeps_padrec_light(base_run):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    light = "import sys, padrec, padrec.serve, padrec.serve.cli; assert 'fastapi' not in sys.modules"
    subprocess.run([sys.executable, "-c", light], check=True, env=env, timeout=60)
    port = _free_port()
    cmd = [sys.executable, "-m", "padrec.serve", "--run", str(base_run / "pretrain"), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None and health["model"] == "sasrec", proc.stderr.read() if proc.poll() else health
        r = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"history": ["i1", "i7"], "k": 2})
        assert r.status_code == 200 and len(r.json()["items"]) == 2
    finally:
        proc.terminate()
        proc.wait(30)
    bad = subprocess.run(
        [sys.executable, "-m", "padrec.serve", "--run", str(base_run / "nope")], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "not a saved padrec run" in bad.stderr


# -- batching and worker processes ---------------------------------------------------------------


def _requests(split) -> list[dict]:
    """Histories of several lengths (one of two histories), with their own k and exclude_seen."""
    out = []
    for c in range(N_CLUSTERS):
        hist = user_history(split, c)[: 1 + c % 4]
        out.append({"histories": [hist], "k": 3 + c, "exclude_seen": c % 2 == 0})
    two = [user_history(split, 1), ["i0", "i13", "i2", "i8", "i44"]]
    out.append({"histories": two, "k": 60, "exclude_seen": True})
    return out


def _same(got: list[list[dict]], want: list[list[dict]]) -> None:
    """Same ids, order and titles; scores to float32 rounding.

    The model's user vectors are bit-identical in or out of a batch, but BLAS multiplies one row by the item
    table with another kernel than many rows, so the last bits of a score may differ (as they already did
    between one history in /recommend and the same history in /recommend/batch).
    """
    assert [[(x["item_id"], x["title"]) for x in row] for row in got] == [
        [(x["item_id"], x["title"]) for x in row] for row in want
    ]
    for g, w in zip(got, want, strict=True):
        assert np.allclose([x["score"] for x in g], [x["score"] for x in w], rtol=1e-5, atol=1e-5)


def test_batched_answers_equal_unbatched_ones_in_one_model_call(base_run, toy):
    split, _, _ = toy
    service = RecService(base_run / "pad")
    reqs = _requests(split)
    want = [service.recommend(r["histories"], k=r["k"], exclude_seen=r["exclude_seen"]).items for r in reqs]
    calls: list[int] = []
    real_score = service.snapshot.model.score

    def counted(histories):  # the real model's score, counting calls and their batch sizes
        calls.append(len(histories))
        return real_score(histories)

    service.snapshot.model.score = counted
    batcher = Batcher(service, max_batch=64, wait_ms=500, adaptive=False)
    try:
        futures = [batcher.submit(r["histories"], k=r["k"], exclude_seen=r["exclude_seen"]) for r in reqs]
        got = [f.result(30) for f in futures]
    finally:
        batcher.close()
    assert calls == [sum(len(r["histories"]) for r in reqs)]  # one model call for every request
    for g, w in zip(got, want, strict=True):
        assert g.exact is True
        _same(g.items, w)
    assert [len(g.items[0]) for g in got[:N_CLUSTERS]] == [3 + c for c in range(N_CLUSTERS)]
    # exclude_seen honoured per request: seen items only come back to requests that allow them
    for r, g in zip(reqs, got, strict=True):
        for hist, row in zip(r["histories"], g.items, strict=True):
            assert bool(set(hist) & {x["item_id"] for x in row}) <= (not r["exclude_seen"])
    assert batcher.stats()["batches"] == 1 and batcher.stats()["requests"] == len(reqs)


def test_http_batching_matches_unbatched_serving_and_splits_oversized_batches(base_run, toy):
    split, _, _ = toy
    reqs = _requests(split)
    bodies = [{"history": r["histories"][0], "k": r["k"], "exclude_seen": r["exclude_seen"]} for r in reqs] * 4

    def post_all(url: str) -> list[list[dict]]:
        out: list = [None] * len(bodies)

        def one(i: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                r = c.post("/recommend", json=bodies[i])
                assert r.status_code == 200, r.text
                out[i] = r.json()["items"]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return out

    with ServerThread(create_app(RecService(base_run / "pad"), max_batch=1)) as server:
        want = post_all(server.url)
        assert httpx.get(f"{server.url}/metrics").json()["batching"] is None
    service = RecService(base_run / "pad")
    with ServerThread(create_app(service, max_batch=4, batch_wait_ms=50)) as server:
        got = post_all(server.url)
        stats = httpx.get(f"{server.url}/metrics").json()["batching"]
    for g, w in zip(got, want, strict=True):
        _same([g], [w])
    assert stats["requests"] == len(bodies) and stats["max_batch"] == 4
    assert 1 < stats["mean_histories_per_batch"] <= 4  # batched, never above the cap


def test_indexed_and_exact_requests_share_a_batch(base_run, toy):
    split, _, _ = toy
    hist = [user_history(split, c) for c in range(N_CLUSTERS)]
    service = RecService(base_run / "pretrain", ann="flat")
    want_exact = service.recommend(hist, k=5, exact=True).items
    want_index = [service.recommend([h], k=4 + i % 2, exclude_seen=i % 3 > 0).items[0] for i, h in enumerate(hist)]
    batcher = Batcher(service, max_batch=64, wait_ms=500, adaptive=False)
    try:
        exact = batcher.submit(hist, k=5, exact=True)
        indexed = [batcher.submit([h], k=4 + i % 2, exclude_seen=i % 3 > 0) for i, h in enumerate(hist)]
        assert exact.result(30).exact is True
        _same(exact.result().items, want_exact)
        for f, w in zip(indexed, want_index, strict=True):
            assert f.result(30).exact is False
            assert [x["item_id"] for x in f.result().items[0]] == [x["item_id"] for x in w]
    finally:
        batcher.close()
    assert batcher.stats()["batches"] == 1


def test_sequential_batches_skip_the_padding_and_score_the_same(base_run):
    model = Recommender.load(base_run / "pretrain")
    assert cropped_scorer(Recommender.load(base_run / "pad")) is None  # PAD: its own score, one call
    score = cropped_scorer(model)
    assert score is not None
    rng = np.random.default_rng(1)
    ids = [str(e) for e in model.item_ids[1:]]
    hist = [list(rng.choice(ids, size=n)) for n in (1, 2, 3, 5, 9, 10, 14, 40) * 3]  # max_len is 10
    internal = [model.to_internal(h) for h in hist]
    assert torch.allclose(score(internal), model.score(internal), rtol=1e-5, atol=1e-5)
    service = RecService(base_run / "pretrain")
    want = [service.recommend([h], k=7, exclude_seen=i % 2 == 0).items[0] for i, h in enumerate(hist)]
    batcher = Batcher(service, max_batch=64, wait_ms=500, adaptive=False)
    try:
        futures = [batcher.submit([h], k=7, exclude_seen=i % 2 == 0) for i, h in enumerate(hist)]
        for f, w in zip(futures, want, strict=True):
            _same(f.result(30).items, [w])
    finally:
        batcher.close()
    assert batcher.stats()["batches"] == 1


def test_a_lone_client_never_waits_for_the_batch_window(base_run, toy):
    split, _, _ = toy
    batcher = Batcher(RecService(base_run / "pad"), max_batch=64, wait_ms=5000)
    try:
        for c in range(3):
            t0 = time.perf_counter()
            assert batcher.recommend([user_history(split, c)], k=3).items[0]
            assert time.perf_counter() - t0 < 2.5  # the 5 s window was not waited out
    finally:
        batcher.close()


def test_a_bad_request_among_good_ones_fails_alone(base_run, toy):
    split, _, _ = toy
    service = RecService(base_run / "pad")
    good = [user_history(split, c) for c in range(N_CLUSTERS)]
    want = [service.recommend([h], k=5).items[0] for h in good]
    batcher = Batcher(service, max_batch=64, wait_ms=300, adaptive=False)
    try:
        # refused when submitted, before it can join (and spoil) a batch
        first = [batcher.submit([h], k=5) for h in good[:3]]
        with pytest.raises(ServeError, match="unknown item ids: nope"):
            batcher.submit([["i1", "nope"]], k=5)
        with pytest.raises(ServeError, match="history is empty"):
            batcher.submit([[]], k=5)
        rest = [batcher.submit([h], k=5) for h in good[3:]]
        for f, w in zip(first + rest, want, strict=True):
            _same(f.result(30).items, [w])

        # a request that passes validation but breaks the model call: the batch is retried one by one
        real_score = service.snapshot.model.score
        poison = "i37"
        poison_id = int(service.snapshot.model.to_internal([poison])[0])

        def fragile(histories):  # the real model, failing whenever the poisoned item is in a history
            if any(poison_id in h for h in histories):
                raise RuntimeError("model failure")
            return real_score(histories)

        service.snapshot.model.score = fragile
        mixed = [batcher.submit([h], k=5) for h in good[:3]]
        bad = batcher.submit([["i1", poison]], k=5)
        mixed += [batcher.submit([h], k=5) for h in good[3:]]
        with pytest.raises(RuntimeError, match="model failure"):
            bad.result(30)
        for f, w in zip(mixed, want, strict=True):
            _same(f.result(30).items, [w])
    finally:
        batcher.close()

    with serving(base_run / "pad") as c:  # over HTTP: bad requests get their 4xx, good ones their lists
        bodies = [{"history": h, "k": 5} for h in good] + [
            {"history": ["i1", "zz"], "k": 5},
            {"history": [], "k": 5},
            {"history": ["i1"], "k": 10**6},
        ]
        codes: dict[int, tuple[int, dict]] = {}

        def one(i: int) -> None:
            r = c.post("/recommend", json=bodies[i])
            codes[i] = (r.status_code, r.json())

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [codes[i][0] for i in range(len(bodies))] == [200] * len(good) + [422, 422, 422]
        for i, w in enumerate(want):
            _same([codes[i][1]["items"]], [w])
        assert [codes[len(good) + j][1]["code"] for j in range(3)] == ["unknown_items", "empty_history", "invalid_k"]


def test_an_added_item_is_seen_by_the_next_batched_recommend(pad_dir, toy):
    """Read-your-writes through the batcher: every add is followed by a recommend that must know the new id."""
    split, centres, _ = toy
    errors: list[str] = []

    def adder(t: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for j in range(5):
                item = f"rw{t}-{j}"
                r = c.post("/items", json={"id": item, "vector": centres[(t + j) % N_CLUSTERS].tolist()})
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                size = r.json()["n_items"]
                r = c.post("/recommend", json={"history": [item], "k": 1000})
                if r.status_code != 200 or len(r.json()["items"]) < size - 1:
                    errors.append(f"after adding {item} (catalogue {size}): {r.status_code} {r.text[:200]}")

    def reader(url: str, stop: threading.Event) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/recommend", json={"history": user_history(split, 3), "k": 5})
                if r.status_code != 200:
                    errors.append(r.text)

    stop = threading.Event()
    with ServerThread(create_app(RecService(pad_dir), batch_wait_ms=5)) as server:
        readers = [threading.Thread(target=reader, args=(server.url, stop)) for _ in range(4)]
        adders = [threading.Thread(target=adder, args=(t, server.url)) for t in range(3)]
        for th in readers + adders:
            th.start()
        for th in adders:
            th.join(60)
        stop.set()
        for th in readers:
            th.join(60)
        stats = httpx.get(f"{server.url}/metrics").json()["batching"]
    assert not errors, errors[:3]
    assert stats["requests"] > 15 and stats["mean_histories_per_batch"] >= 1


def test_several_workers_serve_read_only_and_all_see_the_replayed_log(pad_dir):
    RecService(pad_dir).add_items([{"id": "before-start", "vector": [0.25] * DIM}])  # in the log, replayed by each
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    port = _free_port()
    cmd = [sys.executable, "-m", "padrec.serve", "--run", str(pad_dir), "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, health = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert health["can_add_items"] is False and "2 worker processes" in health["read_only"]
        r = httpx.post(f"{url}/items", json={"id": "n1", "vector": [0.0] * DIM})
        assert r.status_code == 409 and r.json()["code"] == "read_only" and "--workers 1" in r.json()["detail"]

        pids: set[int] = set()
        sizes: set[int] = set()

        def probe() -> None:
            for _ in range(15):
                with httpx.Client(base_url=url, timeout=30) as c:  # a new connection each time
                    h = c.get("/health").json()
                    pids.add(h["worker_pid"])
                    sizes.add(h["n_items"])
                    assert c.post("/recommend", json={"history": ["before-start"], "k": 3}).status_code == 200

        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            threads = [threading.Thread(target=probe) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        assert len(pids) == 2 and proc.pid not in pids  # two worker processes answered
        assert sizes == {N_ITEMS + 1}  # each replayed the log
    finally:
        proc.terminate()
        proc.wait(30)
    assert len((pad_dir / LOG_NAME).read_text().splitlines()) == 1  # nothing was appended
    bad = subprocess.run([*cmd[:4], str(pad_dir / "nope"), "--workers", "2"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "not a saved padrec run" in bad.stderr


def test_a_started_server_keeps_its_loaded_objects_out_of_garbage_collection(base_run):
    """Full collections over the loaded run paused every request behind them (~130 ms on ml-1m): the server
    freezes what it loaded when it starts, and unfreezes when it stops."""
    import gc

    assert gc.get_freeze_count() == 0
    with serving(base_run / "pad") as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() > 1000
    assert gc.get_freeze_count() == 0
