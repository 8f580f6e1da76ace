"""The facade: a few names that do what the command line does, for notebooks and scripts.

    import padrec
    ds = padrec.Dataset.from_csv("events.csv", items="items.csv", user="user_id", item="item_id", time="ts")
    pad = padrec.PAD(backbone="sasrec", max_epochs=20).fit(ds)
    print(pad.evaluate())
    pad.add_items({"new-1": "A brand-new lipstick, matte red"})
    pad.recommend(["B0001", "B0002"], k=10)

Every name matches a CLI command (``fit`` = ``padrec train`` / ``padrec pad``, ``evaluate``, ``recommend``,
``add_items`` = ``--add-item``, ``save`` / :func:`load_model` = run directories). The library underneath
(:mod:`padrec.data`, :mod:`padrec.models`, :mod:`padrec.pad`, :mod:`padrec.eval`) is unchanged and still the
place for anything the facade does not cover. Ids are your external ids, in and out.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from padrec.cli_options import DataRef

__all__ = [
    "BPRMF",
    "NCF",
    "PAD",
    "BERT4Rec",
    "Caser",
    "Dataset",
    "GRU4Rec",
    "Model",
    "Pop",
    "SASRec",
    "load",
    "load_model",
]


class Dataset:
    """A prepared dataset and its leave-one-out split (last item = test, second-to-last = validation)."""

    def __init__(self, data: Any, ref: DataRef | None = None, split: str = "loo") -> None:
        from padrec.data.split import leave_one_out, time_split

        self.data = data  # padrec.data.dataset.SeqDataset
        self.ref = ref  # how to load it again (None: built in memory)
        self.split = leave_one_out(data) if split == "loo" else time_split(data)

    @classmethod
    def from_csv(
        cls,
        interactions: str | Path,
        items: str | Path | None = None,
        *,
        user: str = "user",
        item: str = "item",
        time: str | None = None,
        item_id: str | None = None,
        text: Sequence[str] | str | None = None,
        data_dir: str | Path | None = None,
    ) -> Dataset:
        """Your interactions (CSV/TSV/Parquet, one row per event) and an optional item table with text.

        ``time`` defaults to a ``timestamp`` column when there is one (else file order). ``items``: ``item_id``
        (default: the ``item`` column name) plus text columns (``text`` keeps only those). Items listed there but
        never interacted with are kept as brand-new items (``ds.new_items``)."""
        text_cols = ",".join(text) if isinstance(text, list | tuple) else text
        ref = DataRef.of(str(interactions), data_dir, items, user, item, time, item_id, text_cols)
        return cls(ref.load(), ref)

    from_parquet = from_csv

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def n_items(self) -> int:
        return self.data.n_items

    @property
    def new_items(self) -> int:
        """Catalogue items without a single interaction (scored from text by PAD)."""
        return self.stats()["new_items"]

    def stats(self) -> dict[str, Any]:
        from padrec.data.stats import describe

        return describe(self.data)

    def history(self, user: str) -> list[str]:
        """A user's whole sequence (external item ids, oldest first)."""
        try:
            u = self.data.user_index[str(user)]
        except KeyError:
            raise KeyError(f"unknown user {user!r} in dataset {self.name!r}") from None
        return self.data.to_external(self.data.sequence(u))

    def __repr__(self) -> str:
        s = self.stats()
        new = f", {s['new_items']:,} new items" if s["new_items"] else ""
        return f"Dataset({self.name!r}: {s['users']:,} users, {s['items']:,} items{new}, {s['interactions']:,} events)"


def load(name_or_path: str | Path, data_dir: str | Path | None = None, items: str | Path | None = None) -> Dataset:
    """A named dataset (``"ml-1m"``, ``"amazon-beauty"``; see ``padrec data list``) or your own file."""
    ref = DataRef.of(str(name_or_path), data_dir, items)
    return Dataset(ref.load(), ref)


def _as_dataset(ds: Dataset | str | Path) -> Dataset:
    return ds if isinstance(ds, Dataset) else load(ds)


class Model:
    """A recommender with its dataset: ``fit``, ``evaluate``, ``recommend``, ``save``; ``add_items`` for PAD."""

    model: str = ""

    def __init__(self, run_dir: str | Path | None = None, **config: Any) -> None:
        self.config = dict(config)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rec: Any = None  # the fitted padrec.models.Recommender
        self.dataset: Dataset | None = None

    def fit(self, ds: Dataset | str | Path) -> Model:
        """Train on the dataset's training prefixes; early stopping on validation NDCG@10, best checkpoint kept."""
        from padrec.models import get_model_class
        from padrec.train.config import resolve
        from padrec.train.trainer import default_run_dir

        self.dataset = _as_dataset(ds)
        split = self.dataset.split
        cls = get_model_class(self.model)
        if hasattr(cls, "config_cls"):
            params, train = resolve(self.model, cls.config_cls, split.dataset.name, self.config)
            self.rec = cls(params=params.model_dump(), train=train.model_dump())
            self.run_dir = self.run_dir or default_run_dir(split.dataset.name, self.model)
            self.rec.fit(split, run_dir=self.run_dir)
        else:
            self.rec = cls(**self.config).fit(split)
        self._write_ref()
        return self

    # -- use ---------------------------------------------------------------------------------------------
    def _fitted(self) -> Any:
        if self.rec is None:
            raise RuntimeError(f"{type(self).__name__}: call fit() or padrec.load_model() first")
        return self.rec

    def _data(self, ds: Dataset | str | Path | None) -> Dataset:
        if ds is not None:
            return _as_dataset(ds)
        if self.dataset is None:
            raise RuntimeError("no dataset: pass one (model.evaluate(ds)) or fit first")
        return self.dataset

    def evaluate(
        self,
        ds: Dataset | str | Path | None = None,
        stage: str = "test",
        protocol: str = "full",
        sampler: str = "uniform",
        ks: Sequence[int] = (5, 10, 20),
    ) -> Any:
        """HR/NDCG/MRR@k of every test user, overall and per group (popularity bins, counts, history length).

        ``protocol="full"`` ranks every item with the history masked; ``"sampled"`` ranks the target among 100
        seeded, stored negatives. Returns :class:`padrec.eval.results.Results` (``print`` it for the table)."""
        from padrec.eval.evaluator import Evaluator
        from padrec.eval.protocol import Protocol

        rec = self._fitted()
        res = Evaluator(self._data(ds).split, Protocol(kind=protocol, sampler=sampler, ks=tuple(ks))).run(rec, stage)
        res.model = getattr(rec, "label", rec.name)
        return res

    def recommend(
        self,
        user_or_history: str | Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-``k`` items for a known user (their whole history) or for a history of item ids, oldest first.

        Returns a table with ``item_id``, ``score`` and ``title``, best first; items in the history are left
        out unless ``exclude_seen=False``."""
        rec = self._fitted()
        if isinstance(user_or_history, str):
            history = self._data(None).history(user_or_history)
        else:
            history = [str(i) for i in user_or_history]
            if not history:
                raise ValueError("the history is empty: give at least one item id")
        rows = rec.recommend([history], k=k, exclude_seen=exclude_seen)[0]
        return pd.DataFrame(rows, columns=["item_id", "score", "title"])

    def add_items(self, items: Mapping[str, str] | Sequence[Mapping[str, Any]] | pd.DataFrame) -> int:
        """Make new items recommendable from their text alone (PAD only); returns how many were new.

        ``items``: ``{id: text}``, a list of ``{"id", "text", "title"?}`` dicts, or a DataFrame with those columns.
        An id the model knows has its text replaced instead."""
        rec = self._fitted()
        if not getattr(rec, "can_add_items", False):
            raise ValueError(f"{rec.name} cannot score items it was not trained on: use padrec.PAD")
        if isinstance(items, pd.DataFrame):
            rows = items.to_dict("records")
        elif isinstance(items, Mapping):
            rows = [{"id": str(i), "text": str(t)} for i, t in items.items()]
        else:
            rows = [dict(r) for r in items]
        return rec.add_items(rows)

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """A self-contained model directory (weights, ids, config, and where its data came from)."""
        path = Path(path)
        self._fitted().save(path)
        if self.dataset is not None and self.dataset.ref is not None:
            self.dataset.ref.write(path, self.dataset.data)
        return path

    def _write_ref(self) -> None:
        if self.run_dir is not None and self.dataset is not None and self.dataset.ref is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.dataset.ref.write(self.run_dir, self.dataset.data)

    def __repr__(self) -> str:
        state = f"fitted on {self.dataset.name!r}" if self.dataset is not None else "not fitted"
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        return f"{type(self).__name__}({state}{where})"


def _model(name: str, cls_name: str, doc: str) -> type[Model]:
    return type(cls_name, (Model,), {"model": name, "__doc__": doc})


SASRec = _model("sasrec", "SASRec", "SASRec (self-attention); keys as in `padrec train --model sasrec` (d=64, lr=...).")
GRU4Rec = _model("gru4rec", "GRU4Rec", "GRU4Rec; keys as in `padrec train --model gru4rec`.")
BERT4Rec = _model("bert4rec", "BERT4Rec", "BERT4Rec (cloze training); keys as in `padrec train --model bert4rec`.")
Caser = _model("caser", "Caser", "Caser (convolutional); keys as in `padrec train --model caser`.")
BPRMF = _model("bpr", "BPRMF", "BPR matrix factorisation; keys as in `padrec train --model bpr`.")
NCF = _model("ncf", "NCF", "Neural collaborative filtering; keys as in `padrec train --model ncf`.")
Pop = _model("pop", "Pop", "Most popular items in training (no keys).")


class PAD(Model):
    """PAD: pre-train the backbone, embed item text, align, and mix three experts by item popularity.

    ``backbone``: a name (``"sasrec"``, ``"gru4rec"``, ``"bert4rec"``, ``"caser"``) or a facade model: an
    unfitted one gives its keys to the backbone, a fitted one (on the same dataset) is reused as the pre-trained
    stage. ``preset``: ``"paper"`` (the published design), ``"simfrozen"`` (padrec's cold-item variant) or ``"simcal"``
    (simfrozen, gates calibrated on validation users; see README, PAD), ``"simcold"`` (simcal that may give up 5%
    of overall NDCG@10 on validation users for cold items), or a fidelity preset (``"paper-bce"``,
    ``"paper-official"``, ``"paper-bins11"``: the paper's design with one setting of its official code). Other keys
    are PAD's and training's, as in ``padrec pad`` (``lam=0.2``, ``max_epochs=50``, ``experts``).
    """

    model = "pad"

    def __init__(
        self,
        backbone: str | Model = "sasrec",
        encoder: str = "minilm",
        run_dir: str | Path | None = None,
        preset: str | None = None,
        **config: Any,
    ) -> None:
        from padrec.pad.pipeline import with_preset

        super().__init__(run_dir, **with_preset(preset, config))
        self.backbone = backbone
        self.encoder = encoder
        self.stages: Any = None  # padrec.pad.pipeline.PADRun after fit

    @property
    def backbone_name(self) -> str:
        return self.backbone if isinstance(self.backbone, str) else self.backbone.model

    def fit(self, ds: Dataset | str | Path) -> PAD:
        """Run every PAD stage in ``run_dir`` (default ``runs/DATASET/pad-BACKBONE``); finished stages are reused."""
        from padrec.pad.pipeline import run_pad

        self.dataset = _as_dataset(ds)
        split = self.dataset.split
        overrides = dict(self.config)
        if isinstance(self.backbone, Model):
            overrides.update({f"backbone.{k}": v for k, v in self.backbone.config.items()})
        self.run_dir = self.run_dir or Path("runs") / split.dataset.name / f"pad-{self.backbone_name}"
        self._reuse_backbone()
        self.stages = run_pad(
            split, self.run_dir, backbone=self.backbone_name, encoder=self.encoder, overrides=overrides, evaluate=False
        )
        self.rec = self.stages.pad
        self._write_ref()
        return self

    def _reuse_backbone(self) -> None:
        """A fitted facade backbone becomes the run's ``pretrain`` stage (PAD reuses a finished stage)."""
        bb = self.backbone
        if not isinstance(bb, Model) or bb.rec is None:
            return
        if bb.dataset is None or bb.dataset.data.item_ids.tolist() != self.dataset.data.item_ids.tolist():
            raise ValueError("the fitted backbone was trained on another dataset: fit PAD with a backbone name")
        pre = self.run_dir / "pretrain"
        if (pre / "model.pt").exists():
            return
        bb.rec.save(pre)
        summary = bb.run_dir / "train.json" if bb.run_dir else None
        if summary is not None and summary.is_file():
            shutil.copyfile(summary, pre / "train.json")
        else:
            (pre / "train.json").write_text(json.dumps({"from": "facade backbone"}))

    def compare(self, ds: Dataset | str | Path | None = None) -> str:
        """One table, as `padrec pad` prints it: the backbone, the aligned tower (and text-only tower) and PAD,
        overall, cold/warm, per popularity bin and per training count."""
        from padrec.pad.pipeline import comparison_table, evaluate_stages

        if self.stages is None:
            raise RuntimeError("compare() needs the stages of fit(); after load_model use evaluate()")
        return comparison_table(evaluate_stages(self.stages, self._data(ds).split))


def load_model(path: str | Path) -> Model:
    """A model directory saved by ``save()``, ``padrec train`` or ``padrec pad`` (its ``pad/`` stage or the run)."""
    from padrec.models import Recommender

    path = Path(path)
    if not (path / "config.json").is_file() and (path / "pad" / "config.json").is_file():
        path = path / "pad"  # a `padrec pad` run directory: serve its final stage
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json: not a saved padrec model (save() or a run directory)")
    rec = Recommender.load(path)
    model = PAD(backbone=rec.config.get("backbone", "sasrec")) if rec.name == "pad" else Model()
    model.model = rec.name
    model.rec, model.run_dir = rec, path
    ref = DataRef.read(path)
    if ref is not None:
        try:
            model.dataset = Dataset(ref.load(), ref)
        except (OSError, ValueError) as e:  # the data moved: the model still recommends from histories
            import warnings

            warnings.warn(f"{path}: could not reload its dataset ({e}); pass one to evaluate()", stacklevel=2)
    return model
