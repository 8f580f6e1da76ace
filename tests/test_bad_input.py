"""Bad input wherever a user types or uploads something: one ``error:`` line naming the file/line/field/option.

Every CLI case runs the real command in-process (typer's CliRunner) and checks: exit code 2, exactly one line
starting with ``error:`` that names what was wrong and where, no exception escaping (a traceback), and nothing
half-written (no run directory, no prepared-data cache entry). HTTP cases go through the FastAPI app of a real
trained run and check the 4xx status and that the JSON body names the field. Loader internals are covered at
library level in test_data_errors.py; these cases go through the commands people run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import needs_data
from typer.testing import CliRunner

from padrec.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One SASRec run on ml-100k, trained for a single batch: enough for every case that needs a saved run."""
    needs_data("ml-100k")
    run = tmp_path_factory.mktemp("bad-input") / "run"
    args = ["train", "--model", "sasrec", "--dataset", "ml-100k", "--run-dir", str(run), "--no-evaluate"]
    res = runner.invoke(app, [*args, "max_epochs=1", "model.max_len=20", "limit_train_batches=0.2", "progress=false"])
    assert res.exit_code == 0, res.output
    assert (run / "model.pt").is_file()
    return run


@pytest.fixture(scope="module")
def places(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """Bad files and broken copies of the run, named in the cases below as {F}, {RUN}, {BAD}."""
    f = tmp_path_factory.mktemp("bad-files")
    files: dict[str, str | bytes] = {
        "empty.csv": "",
        "nocol.csv": "uid,item,timestamp\n1,2,3\n",
        "latin1.csv": b"user,item\n1,caf\xc3\xa9\n2,caf\xe9\n",
        "short_row.csv": "user,item,timestamp\n1,2,3\n1,3\n",
        "long_row.csv": "user,item,timestamp\n1,a,1\n1,b,2\n1,c,3,4,5\n",
        "shifted.csv": "user,item\n1,a,x\n2,b,y\n",  # every row one field longer than the header
        "badts.csv": "user,item,timestamp\n1,2,100\n1,3,101\n2,3,abc\n",
        "duphdr.csv": "user,item,item\n1,2,3\n",
        "fake.parquet": "this is not parquet\n",
        "data.xlsx": "x",
        "short.txt": "u1 a\nu2 a b\n",
        "ok.csv": "".join(f"u{u},i{(u + j) % 6},{j}\n" for u in range(6) for j in range(4)),
    }
    files["ok.csv"] = "user,item,timestamp\n" + str(files["ok.csv"])
    for name, text in files.items():
        (f / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    (f / "emptydir").mkdir()
    bad = tmp_path_factory.mktemp("bad-runs")
    for name in ("badcfg", "badpt", "noitems", "nopt", "badmodel"):
        shutil.copytree(tiny_run, bad / name)
    (bad / "badcfg" / "config.json").write_text('{"model": "sasrec", \n')
    (bad / "badpt" / "model.pt").write_bytes((tiny_run / "model.pt").read_bytes()[:300])
    (bad / "noitems" / "items.json").unlink()
    (bad / "nopt" / "model.pt").unlink()
    (bad / "badmodel" / "config.json").write_text('{"model": "sasrec9"}')
    return {"F": f, "RUN": tiny_run, "BAD": bad}


def assert_one_error(res, *needles: str, code: int = 2) -> str:
    """Exit ``code``, no escaped exception, exactly one ``error:`` line, containing every needle."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    assert not any(line.strip().startswith(("╭", "│", "Usage:")) for line in res.output.splitlines()), res.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _fill(items: list[str], where: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in where.items()}) for a in items]


# -- own data files, through the commands (the file, the line, the field, the option that fixes it) --------------
POP = ["evaluate", "--model", "pop", "--dataset"]
DATA_CASES = [
    ("unknown-name", [*POP, "ml-2m"], ["unknown dataset 'ml-2m'", "ml-1m, ml-100k"]),
    ("missing-file", [*POP, "{F}/missing.csv"], ["missing.csv", "no such file"]),
    ("empty-csv", [*POP, "{F}/empty.csv"], ["empty.csv", "the file is empty"]),
    ("missing-column", [*POP, "{F}/nocol.csv"], ["nocol.csv, line 1", "'user'", "'uid'", "--user-col"]),
    ("missing-time-col", [*POP, "{F}/ok.csv", "--time-col", "ts"], ["ok.csv, line 1", "'ts'", "--time-col"]),
    ("non-utf8", [*POP, "{F}/latin1.csv"], ["latin1.csv, line 3", "0xe9", "column 6", "UTF-8"]),
    ("short-row", [*POP, "{F}/short_row.csv"], ["short_row.csv, line 3", "'timestamp'"]),
    ("long-row", [*POP, "{F}/long_row.csv"], ["long_row.csv, line 4", "expected 3 fields", "found 5"]),
    ("shifted-rows", [*POP, "{F}/shifted.csv"], ["shifted.csv, line 2", "expected 2 fields", "found 3"]),
    ("bad-timestamp", [*POP, "{F}/badts.csv"], ["badts.csv, line 4, field 'timestamp'", "got 'abc'"]),
    ("duplicate-header", [*POP, "{F}/duphdr.csv"], ["duphdr.csv, line 1, field 'item'", "duplicate column"]),
    ("not-parquet", [*POP, "{F}/fake.parquet"], ["fake.parquet", "cannot read as Parquet"]),
    ("unknown-extension", [*POP, "{F}/data.xlsx"], ["data.xlsx", "unknown file type '.xlsx'", ".csv"]),
    ("missing-items-table", [*POP, "{F}/ok.csv", "--items", "{F}/nope.csv"], ["nope.csv", "not found"]),
    ("info-empty-folder", ["data", "info", "{F}/emptydir"], ["emptydir", "no known data files"]),
    ("info-unknown-name", ["data", "info", "ml-2m"], ["unknown dataset 'ml-2m'"]),
    ("download-unknown", ["data", "download", "nope"], ["unknown dataset 'nope'"]),
]


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(args, needles, places, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PADREC_CACHE", str(cache))
    assert_one_error(runner.invoke(app, _fill(args, places)), *_fill(needles, places))
    assert not cache.exists() or not any(cache.rglob("*")), list(cache.rglob("*"))  # nothing prepared was kept


# -- key=value overrides and training options: rejected before a run directory exists ---------------------------
TRAIN = ["train", "--model", "sasrec", "--dataset", "ml-100k", "--run-dir", "{TMP}/run"]
OVERRIDE_CASES = [
    ("no-equals", [*TRAIN, "lr"], ["override 'lr': expected key=value"]),
    ("no-key", [*TRAIN, "=1"], ["override '=1': expected key=value"]),
    ("unknown-key", [*TRAIN, "lrr=0.1"], ["unknown config key 'lrr'", "model keys: d,", "train keys: loss,"]),
    ("lr-not-a-number", [*TRAIN, "lr=abc"], ["lr:", "valid number", "'abc'"]),
    ("negative-epochs", [*TRAIN, "max_epochs=-1"], ["max_epochs:", "greater than or equal to 1", "-1"]),
    ("zero-batch", [*TRAIN, "batch_size=0"], ["batch_size:", "0"]),
    ("model-key-type", [*TRAIN, "model.d=big"], ["model.d:", "valid integer", "'big'"]),
    ("unknown-section", [*TRAIN, "foo.lr=1"], ["unknown config key 'foo.lr'", "'model' and 'train'"]),
    ("bad-choice", [*TRAIN, "loss=nope"], ["loss:", "'ce'", "'nope'"]),
    ("pad-key-on-sasrec", [*TRAIN, "experts=[collab,nope]"], ["unknown config key 'experts'"]),
    (
        "plain-model-key",
        ["train", "--model", "pop", "--dataset", "ml-100k", "--run-dir", "{TMP}/run", "foo=1"],
        [
            "unknown config key 'foo' for model 'pop'",
            "count_test",
        ],
    ),
    (
        "unknown-model",
        ["train", "--model", "nosuch", "--dataset", "ml-100k", "--run-dir", "{TMP}/run"],
        [
            "unknown model 'nosuch'",
            "sasrec",
        ],
    ),
    (
        "resume-without-run-dir",
        ["train", "--model", "sasrec", "--dataset", "ml-100k", "--resume"],
        ["--resume needs --run-dir"],
    ),
    ("resume-nothing", [*TRAIN, "--resume"], ["--resume", "last.ckpt not found"]),
    (
        "run-dir-is-a-file",
        ["train", "--model", "sasrec", "--dataset", "ml-100k", "--run-dir", "{F}/ok.csv"],
        [
            "--run-dir",
            "ok.csv",
            "not a directory",
        ],
    ),
    ("no-batch-left", [*TRAIN, "limit_train_batches=0.001", "progress=false"], ["limit_train_batches"]),
    ("missing-option", ["train", "--model", "sasrec"], ["Missing option '--dataset'"]),
]
PAD = ["pad", "--dataset", "ml-100k", "--run-dir", "{TMP}/run"]
PAD_CASES = [
    ("pad-bad-expert", [*PAD, "experts=[collab,nope]"], ["experts must be", "'nope'"]),
    ("pad-freeze-absent", [*PAD, "experts=[collab,aligned]", "freeze=[text]"], ["freeze=['text']", "experts="]),
    ("pad-value-type", [*PAD, "lam=abc"], ["invalid PAD config: lam:", "'abc'"]),
    ("pad-unknown-key", [*PAD, "lamb=0.1"], ["unknown PAD config key 'lamb'", "backbone."]),
    ("pad-backbone-key", [*PAD, "backbone.d=big"], ["backbone.* overrides", "model.d", "'big'"]),
    ("pad-backbone-pop", [*PAD, "--backbone", "pop"], ["backbone 'pop'", "sequential model"]),
    ("pad-backbone-unknown", [*PAD, "--backbone", "nope"], ["unknown model 'nope'"]),
]


@pytest.mark.parametrize(
    ("args", "needles"),
    [c[1:] for c in OVERRIDE_CASES + PAD_CASES],
    ids=[c[0] for c in OVERRIDE_CASES + PAD_CASES],
)
def test_bad_override_writes_nothing(args, needles, places, tmp_path):
    where = {**places, "TMP": tmp_path}
    assert_one_error(runner.invoke(app, _fill(args, where)), *_fill(needles, where))
    assert not (tmp_path / "run").exists(), list((tmp_path / "run").rglob("*"))


# -- run directories: missing, incomplete, corrupt, or of another dataset ---------------------------------------
RUN_CASES = [
    (
        "recommend-missing-run",
        ["recommend", "--run", "{TMP}/nope", "--history", "50"],
        ["nope is not a saved padrec run (no config.json)"],
    ),
    ("evaluate-missing-run", ["evaluate", "--run", "{TMP}/nope"], ["is not a saved padrec run"]),
    ("evaluate-dir-without-config", ["evaluate", "--run", "{F}/emptydir"], ["emptydir is not a saved padrec run"]),
    (
        "corrupt-config",
        ["recommend", "--run", "{BAD}/badcfg", "--history", "50"],
        ["badcfg/config.json, line 2, column 1: not valid JSON"],
    ),
    (
        "unknown-model-in-config",
        ["recommend", "--run", "{BAD}/badmodel", "--history", "50"],
        ["unknown model 'sasrec9'"],
    ),
    (
        "corrupt-weights",
        ["recommend", "--run", "{BAD}/badpt", "--history", "50"],
        ["badpt/model.pt: cannot be read as padrec weights"],
    ),
    ("evaluate-corrupt-weights", ["evaluate", "--run", "{BAD}/badpt"], ["badpt/model.pt"]),
    (
        "missing-items-json",
        ["recommend", "--run", "{BAD}/noitems", "--history", "50"],
        ["noitems/items.json is missing"],
    ),
    ("missing-weights", ["recommend", "--run", "{BAD}/nopt", "--history", "50"], ["nopt/model.pt is missing"]),
    (
        "run-of-another-dataset",
        ["evaluate", "--run", "{RUN}", "--dataset", "{F}/ok.csv"],
        [
            "another item catalogue",
            "1,682 items",
            "'ok'",
        ],
    ),
    ("serve-missing-run", ["serve", "--run", "{TMP}/nope"], ["is not a saved padrec run"]),
    ("serve-corrupt-config", ["serve", "--run", "{BAD}/badcfg"], ["config.json, line 2"]),
    ("serve-max-k", ["serve", "--run", "{RUN}", "--max-k", "0"], ["max_k", "0"]),
    (
        "serve-missing-encoder",
        ["serve", "--run", "{RUN}", "--encoder", "{TMP}/no-such-encoder"],
        ["--encoder", "no-such-encoder", "does not exist"],
    ),
    ("concordance-missing-run", ["analyze", "concordance", "--run", "{TMP}/nope"], ["not a saved run"]),
    ("concordance-k", ["analyze", "concordance", "--run", "{RUN}", "-k", "0"], ["-k:", "got 0"]),
]
REC = ["recommend", "--run", "{RUN}"]
OPTION_CASES = [
    ("unknown-history-ids", [*REC, "--history", "50,nope,999999"], ["unknown item ids: nope, 999999"]),
    ("empty-history", [*REC, "--history", " , "], ["--history is empty"]),
    ("k-zero", [*REC, "--history", "50", "-k", "0"], ["k must be positive, got 0"]),
    ("k-not-int", [*REC, "--history", "50", "-k", "abc"], ["Invalid value for '-k'"]),
    ("history-missing", [*REC], ["Missing option '--history'"]),
    ("add-item-without-equals", [*REC, "--history", "50", "--add-item", "x"], ["--add-item 'x': expected ID=text"]),
    ("add-item-without-id", [*REC, "--history", "50", "--add-item", "=a film"], ["--add-item '=a film'"]),
    ("add-item-not-pad", [*REC, "--history", "50", "--add-item", "x=a film"], ["cannot score items"]),
    ("protocol", ["evaluate", "--run", "{RUN}", "--protocol", "nope"], ["--protocol: expected 'full' or 'sampled'"]),
    (
        "sampler",
        ["evaluate", "--run", "{RUN}", "--protocol", "sampled", "--sampler", "zipf"],
        ["--sampler: expected 'uniform' or 'popularity', got 'zipf'"],
    ),
    ("stage", ["evaluate", "--run", "{RUN}", "--stage", "train"], ["--stage: expected 'test' or 'valid'"]),
    ("split", ["evaluate", "--run", "{RUN}", "--split", "random"], ["--split: expected 'loo' or 'time'"]),
    (
        "n-negatives",
        ["evaluate", "--run", "{RUN}", "--protocol", "sampled", "--n-negatives", "0"],
        [
            "n_negatives:",
            "got 0",
        ],
    ),
    ("evaluate-nothing", ["evaluate"], ["give --run DIR, or --model and --dataset"]),
    ("all-histories-too-short", [*POP, "{F}/short.txt"], ["'short'", "no users with a test target", "3 or more"]),
    ("evaluate-untrained", ["evaluate", "--model", "sasrec", "--dataset", "ml-100k"], ["must be trained first"]),
    (
        "embed-unknown-encoder",
        ["embed", "--dataset", "ml-100k", "--encoder", "{TMP}/no-model"],
        ["no-model does not exist"],
    ),
    ("embed-shards", ["embed", "--dataset", "ml-100k", "--shards", "x"], ["--shards", "got 'x'"]),
    ("embed-dtype", ["embed", "--dataset", "ml-100k", "--dtype", "float99"], ["unknown dtype 'float99'"]),
    ("unknown-command", ["nosuchcmd"], ["No such command 'nosuchcmd'"]),
]
PALR = ["palr", "evaluate", "--dataset", "ml-100k", "--run-dir", "{TMP}/run", "--zero-shot"]
PALR_CASES = [
    ("palr-unknown-key", [*PALR, "--retriever", "{RUN}", "nope=1"], ["unknown PALR config key 'nope'"]),
    ("palr-value-type", [*PALR, "--retriever", "{RUN}", "n_candidates=abc"], ["n_candidates:", "'abc'"]),
    ("palr-missing-retriever", [*PALR, "--retriever", "{TMP}/nope"], ["retriever run directory", "not found"]),
    ("palr-unknown-retriever", [*PALR, "--retriever", "nosuch"], ["unknown model 'nosuch'"]),
]


@pytest.mark.parametrize(
    ("args", "needles"),
    [c[1:] for c in RUN_CASES + OPTION_CASES + PALR_CASES],
    ids=[c[0] for c in RUN_CASES + OPTION_CASES + PALR_CASES],
)
def test_bad_run_or_option(args, needles, places, tmp_path):
    where = {**places, "TMP": tmp_path}
    before = sorted(p.relative_to(places["RUN"]) for p in places["RUN"].rglob("*"))
    assert_one_error(runner.invoke(app, _fill(args, where)), *_fill(needles, where))
    assert not (tmp_path / "run").exists()  # palr: no run directory for a config that was refused
    assert sorted(p.relative_to(places["RUN"]) for p in places["RUN"].rglob("*")) == before  # nothing written


# -- PALR: a missing language model, a retriever of other data, stale instruction data: refused before any work ----
@pytest.fixture(scope="module")
def palr_runs(places, tmp_path_factory) -> dict[str, Path]:
    """Instruction data built by ``padrec palr build-data``: for ml-100k, and for an own CSV (changed per case)."""
    root = tmp_path_factory.mktemp("palr-runs")
    ml = root / "ml"
    res = runner.invoke(app, ["palr", "build-data", "--dataset", "ml-100k", "--run-dir", str(ml), *PALR_SMALL])
    assert res.exit_code == 0, res.output
    own_csv = root / "own.csv"
    shutil.copy(places["F"] / "ok.csv", own_csv)
    own = root / "own"
    res = runner.invoke(app, ["palr", "build-data", "--dataset", str(own_csv), "--run-dir", str(own), *PALR_OWN])
    assert res.exit_code == 0, res.output
    assert (own / "data" / "meta.json").is_file() and (ml / "data" / "meta.json").is_file()
    return {"ml": ml, "own": own, "own_csv": own_csv}


PALR_SMALL = ["user_fraction=0.01", "progress=false"]
PALR_OWN = ["min_input=1", "label_len=1", "user_fraction=1.0", "progress=false"]
PALR_RUN = ["--run-dir", "{TMP}/run"]
PALR_REFUSED = [
    (
        "palr-lm-missing",
        ["palr", "run", "--dataset", "ml-100k", *PALR_RUN, "--retriever", "pop", "--lm", "{TMP}/nope"],
        ["language model", "no such file or directory {TMP}/nope", "expected 'smollm2'", "model directory"],
    ),
    (
        "palr-lm-not-a-model",
        ["palr", "finetune", "--dataset", "ml-100k", *PALR_RUN, "--lm", "{F}/emptydir"],
        ["language model", "emptydir holds neither config.json", "adapter_config.json"],
    ),
    (
        "palr-lm-missing-for-profiles",
        ["palr", "profiles", "--dataset", "ml-100k", *PALR_RUN, "--lm", "{TMP}/nope", "profile=lm"],
        ["no such file or directory {TMP}/nope"],
    ),
    (
        "palr-retriever-of-another-dataset",
        ["palr", "evaluate", "--dataset", "{F}/ok.csv", *PALR_RUN, "--zero-shot", "--retriever", "{RUN}"],
        ["retriever {RUN} was trained on 'ml-100k' (1,682 items)", "'ok' (6 items)", "--retriever"],
    ),
    (
        "palr-run-retriever-of-another-dataset",
        ["palr", "run", "--dataset", "{F}/ok.csv", *PALR_RUN, "--retriever", "{RUN}"],
        ["retriever {RUN} was trained on 'ml-100k'"],
    ),
    (
        "palr-data-of-another-dataset",
        ["palr", "build-data", "--dataset", "{F}/ok.csv", "--run-dir", "{ML}"],
        ["instruction data {ML}/data", "built for dataset 'ml-100k' (1,682 items), not 'ok' (6 items)", "build-data"],
    ),
    (
        "palr-data-for-another-mode",
        ["palr", "build-data", "--dataset", "ml-100k", "--run-dir", "{ML}", "mode=verbalizer", *PALR_SMALL],
        ["{ML}/data holds titles-format ranking examples", "mode=verbalizer trains labelled", "delete {ML}/data"],
    ),
    (
        "palr-data-older-than-the-data",
        ["palr", "build-data", "--dataset", "{TMP}/own.csv", "--run-dir", "{OWN}", *PALR_OWN],
        ["instruction data {OWN}/data is older than the data", "'own' changed since it was built", "build-data"],
    ),
    (
        "palr-old-data-older-than-the-data",
        ["palr", "finetune", "--dataset", "ml-100k", "--run-dir", "{OLD}", "--lm", "{TMP}/lm", *PALR_SMALL],
        ["{OLD}/data is older than the data", "943/1682/99000 then, 943/1682/100000 now", "rebuild it"],
    ),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in PALR_REFUSED], ids=[c[0] for c in PALR_REFUSED])
def test_palr_refuses_before_any_work(args, needles, places, palr_runs, tmp_path):
    """Exit 2 with one line saying what to fix, before a language model loads; nothing is written or changed."""
    ml, own, old = tmp_path / "ml", tmp_path / "own", tmp_path / "old"
    shutil.copytree(palr_runs["ml"], ml)
    shutil.copytree(palr_runs["own"], own)
    shutil.copytree(palr_runs["ml"], old)
    meta = json.loads((old / "data" / "meta.json").read_text())
    for key in ("data_fingerprint", "n_items", "retrieval_format"):
        meta.pop(key, None)  # as an older padrec wrote it ...
    meta["dataset_shape"][2] -= 1000  # ... before ml-100k got 1,000 more ratings
    (old / "data" / "meta.json").write_text(json.dumps(meta))
    changed = palr_runs["own_csv"].read_text() + "".join(f"u9,i{i},{i}\n" for i in range(5))  # a new user
    (tmp_path / "own.csv").write_text(changed)
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text("{}")  # passes the model check; never loaded
    where = {**places, "TMP": tmp_path, "ML": ml, "OWN": own, "OLD": old}
    before = _tree(tmp_path)
    assert_one_error(runner.invoke(app, _fill(args, where)), *_fill(needles, where))
    assert not (tmp_path / "run").exists()
    assert _tree(tmp_path) == before  # nothing written, no dataset.json overwritten, no stage rebuilt


# -- HTTP: 4xx with a JSON body that names the field ------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny_run):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from padrec.serve.server import build_app

    with TestClient(build_app(tiny_run, max_k=100)) as c:
        yield c


HTTP_CASES = [
    ("missing-field", "/recommend", {"k": 5}, 422, ["history", "Field required"]),
    ("history-not-a-list", "/recommend", {"history": "50"}, 422, ["history", "valid list"]),
    ("id-not-a-string", "/recommend", {"history": [50]}, 422, ["history.0", "valid string"]),
    ("k-wrong-type", "/recommend", {"history": ["50"], "k": "5"}, 422, ["k:", "valid integer"]),
    ("unknown-ids", "/recommend", {"history": ["50", "nope", "zzz"]}, 422, ["unknown item ids: nope, zzz"]),
    ("k-zero", "/recommend", {"history": ["50"], "k": 0}, 422, ["k:", "greater than or equal to 1"]),
    ("k-above-limit", "/recommend", {"history": ["50"], "k": 101}, 422, ["k=101", "limit of 100"]),
    ("empty-history", "/recommend", {"history": []}, 422, ["history is empty"]),
    ("empty-id", "/recommend", {"history": [""]}, 422, ["history.0", "at least 1 character"]),
    ("misspelt-field", "/recommend", {"history": ["50"], "excludeSeen": False}, 422, ["excludeSeen", "Extra"]),
    ("malformed-json", "/recommend", b'{"history": ["50"', 400, ["malformed JSON body"]),
    ("no-body", "/recommend", b"", 422, ["request body is missing"]),
    ("not-an-object", "/recommend", [1, 2], 422, ["body:", "dictionary or object"]),
    ("huge-batch", "/recommend/batch", {"histories": [["50"]] * 1025}, 422, ["histories", "at most 1024"]),
    ("batch-empty-history", "/recommend/batch", {"histories": [["50"], []]}, 422, ["histories [1] are empty"]),
    ("batch-unknown-id", "/recommend/batch", {"histories": [["50"], ["nope"]]}, 422, ["unknown item ids: nope"]),
    ("huge-history", "/recommend", {"history": ["50"] * 10_001}, 422, ["history", "at most 10000"]),
    ("item-without-id", "/items", {"text": "a new film"}, 422, ["id", "Field required"]),
    ("second-item-without-id", "/items", [{"id": "x1", "text": "t"}, {"text": "t"}], 422, ["1.id"]),
    ("vector-not-numbers", "/items", {"id": "x1", "vector": [1.0, "a"]}, 422, ["vector.1", "valid number"]),
    ("cannot-add-items", "/items", {"id": "x1", "text": "t"}, 409, ["cannot score items", "sasrec"]),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "needles"), [c[1:] for c in HTTP_CASES], ids=[c[0] for c in HTTP_CASES]
)
def test_bad_http_request(client, path, body, status, needles):
    if isinstance(body, bytes):
        res = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        res = client.post(path, json=body)
    assert res.status_code == status, res.text
    out = res.json()
    assert out["code"] and "\n" not in out["detail"], out
    for needle in needles:
        assert needle in out["detail"], (needle, out["detail"])


def test_http_unknown_item_is_404(client):
    res = client.get("/items/nope")
    assert res.status_code == 404 and res.json()["unknown_ids"] == ["nope"]
    assert client.get("/health").json()["n_items"] == 1682  # refused requests changed nothing
