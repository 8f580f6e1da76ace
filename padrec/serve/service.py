"""The serving core, free of any web framework: validate, recommend, add items live, persist them.

Concurrency model (copy-on-write): the served state is an immutable :class:`Snapshot` (model + id index).
Readers take the current reference and score against it without any lock; an add deep-copies the model,
grows the copy, appends the items to the log and only then swaps the reference. So a recommend running
during an add sees the whole old model or the whole new one, never a half-grown one, and adds are
serialised by one lock, so none is lost. The copy costs one model's memory per add request (send items
in batches when adding many).

Persistence (replay log): added items go to ``RUN/added_items.jsonl``, one line per accepted request,
written with a single ``write`` + ``fsync`` before the request is acknowledged. On start the trained
model is loaded unchanged and the log is replayed through the same code path as a live add. The
trained files (``model.pt``, ``items.json``) are never rewritten, so a crash can at worst leave a torn
last line, which belongs to a request that was never acknowledged: it is dropped (and truncated away)
on the next start. Vectors are stored in the log, so a replay needs no text encoder and gives exactly
the live model. One server per run directory: two servers appending to one log would not see each
other's items. For the same reason a server with several worker processes is read-only (``read_only``).

Recommend requests are usually not scored here but by :class:`padrec.serve.batching.Batcher`, which
validates them with :meth:`RecService.check_request` and scores concurrent ones together.

Text: an item posted without a ``vector`` is embedded here, with the run's own encoder (``config.json``'s
``encoder``, loaded once on first use) and the same text rules as ``PAD.add_items`` (text, else title,
else ``item <id>``; title defaults to the text), then added with ``add_item_vectors`` like any other, so
the vector is what gets logged.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from padrec.models.base import Recommender

log = logging.getLogger("padrec.serve")

LOG_NAME = "added_items.jsonl"
DEFAULT_MAX_K = 1000
MAX_BATCH = 1024
MAX_HISTORY = 10_000
MAX_ITEMS_PER_REQUEST = 1000

#: ``texts -> float32 [len(texts), text_dim]``: turns an added item's text into the run's text space.
Embedder = Callable[[Sequence[str]], np.ndarray]
#: ``embed="auto"``: the run's own encoder, when its config names one.
AUTO = "auto"


class ServeError(Exception):
    """A refused request: HTTP status, a stable machine-readable code, a message and extra JSON fields."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "code": self.code, **self.extra}


@dataclass(frozen=True)
class Snapshot:
    """One published, never-mutated serving state."""

    model: Recommender
    index: Mapping[str, int]  # external id -> internal id
    added: Mapping[str, dict[str, Any]]  # metadata of items added or updated through the service
    version: int
    ann: Any = None  # padrec.serve.ann.DotProductIndex or None


@dataclass
class Recommendations:
    items: list[list[dict[str, Any]]]
    exact: bool


@dataclass
class _Counters:
    add_requests: int = 0
    items_added: int = 0
    items_updated: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def prepare_for_serving(model: Recommender) -> Recommender:
    """Put every torch module of ``model`` in eval mode once.

    ``score`` methods save and restore the training flag around their forward pass; with concurrent
    callers that dance can leave another request's forward pass with dropout on. In eval mode it is a no-op.
    """
    from torch import nn

    for value in vars(model).values():
        if isinstance(value, nn.Module):
            value.eval()
    return model


def dataset_name(run_dir: Path) -> str | None:
    """The dataset a run was trained on, from ``dataset.json`` (train/pad) or ``pad.json`` next to the run."""
    for ref, key in (
        (run_dir / "dataset.json", "name"),
        (run_dir.parent / "dataset.json", "name"),
        (run_dir.parent / "pad.json", "dataset"),
    ):
        try:
            return str(json.loads(ref.read_text())[key])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


class RecService:
    """Serve one saved run: exact (``Recommender.recommend``) or indexed top-k, and live item additions.

    ``embed`` turns the text of items posted without a ``vector`` into vectors: ``"auto"`` (the run's
    encoder), an encoder name or path (``padrec.text.load_encoder``), a callable, or None (vectors required).
    ``read_only``, when set, is why adds are refused (e.g. several worker processes, each with its own
    copy of the model, could not see each other's items); the log is still replayed on start.
    """

    def __init__(
        self,
        run_dir: str | Path,
        model: Recommender | None = None,
        *,
        ann: str | None = None,
        max_k: int = DEFAULT_MAX_K,
        embed: Embedder | str | None = AUTO,
        read_only: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.read_only = read_only
        if model is None:
            if not (self.run_dir / "config.json").is_file():
                hint = " (a PAD run serves its pad/ sub-directory)" if (self.run_dir / "pad").is_dir() else ""
                raise FileNotFoundError(f"{self.run_dir} is not a saved padrec run (no config.json){hint}")
            model = Recommender.load(self.run_dir)
        prepare_for_serving(model)
        if max_k < 1:
            raise ValueError(f"max_k must be positive, got {max_k}")
        self.max_k, self.ann_kind = max_k, ann
        self._embed_spec = embed
        self._embedder: Embedder | None = embed if callable(embed) else None
        if ann:
            from padrec.serve.ann import supports_ann

            if not supports_ann(model):
                raise ValueError(
                    f"an approximate index needs a model that scores by user·item dot product "
                    f"(sasrec, bert4rec, gru4rec, caser); {model.name!r} does not"
                )
        self.log_path = self.run_dir / LOG_NAME
        self.dataset = dataset_name(self.run_dir)
        self.started = time.time()
        self._write_lock = threading.Lock()
        self._counters = _Counters()
        added = self._replay(model)
        self._snap = self._snapshot(model, added, version=0)

    # -- reading -----------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snap

    @property
    def can_add_items(self) -> bool:
        return bool(getattr(self._snap.model, "can_add_items", False)) and not self.read_only

    def recommend(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        exclude_seen: bool = True,
        exact: bool | None = None,
    ) -> Recommendations:
        """Top-``k`` per history. ``exact=None`` uses the index when the server has one, else exact scoring."""
        snap = self._snap  # one reference for the whole request: a concurrent add cannot change it
        if self.check_request(histories, k, exact, snap):
            return Recommendations(snap.ann.recommend(snap.model, histories, k, exclude_seen), exact=False)
        return Recommendations(snap.model.recommend(histories, k=k, exclude_seen=exclude_seen), exact=True)

    def check_request(
        self, histories: Sequence[Sequence[str]], k: int, exact: bool | None, snap: Snapshot | None = None
    ) -> bool:
        """Validate a recommend request (raises :class:`ServeError`); True when it is answered by the index.

        A request valid for one snapshot stays valid for every later one: adds never remove an id.
        """
        snap = snap or self._snap
        self._check_k(k, snap)
        self._check_histories(histories, snap)
        if exact is False and snap.ann is None:
            raise ServeError(
                422,
                "no_index",
                "approximate scoring was requested but this server has no index; start it with --ann hnsw "
                "(sequential models only)",
            )
        return snap.ann is not None and not exact

    def get_item(self, item_id: str) -> dict[str, Any]:
        snap = self._snap
        internal = snap.index.get(str(item_id))
        if internal is None:
            raise ServeError(404, "unknown_item", f"unknown item id: {item_id}", unknown_ids=[str(item_id)])
        titles = snap.model.titles or []
        out: dict[str, Any] = {
            "id": str(item_id),
            "title": titles[internal] if internal < len(titles) else "",
            "internal_id": internal,
            "source": "trained",
        }
        meta = snap.added.get(str(item_id))
        if meta is not None:
            out["source"] = meta["source"]
            out["text"] = meta.get("text", "")
            out.update(meta.get("extra") or {})
        return out

    def health(self) -> dict[str, Any]:
        snap = self._snap
        return {
            "status": "ok",
            "model": snap.model.name,
            "dataset": self.dataset,
            "n_items": snap.model.n_items,
            "can_add_items": bool(getattr(snap.model, "can_add_items", False)) and not self.read_only,
            "read_only": self.read_only,
            "worker_pid": os.getpid(),
            "index": self.ann_kind,
            "text_encoder": self.text_encoder,
            "version": snap.version,
            "run_dir": str(self.run_dir),
        }

    @property
    def text_encoder(self) -> str | None:
        """What embeds the text of items posted without a vector (None: vectors are required)."""
        spec = self._embed_spec
        if callable(spec):
            return getattr(spec, "__name__", "custom")
        if spec == AUTO:
            spec = self._snap.model.config.get("encoder") if getattr(self._snap.model, "can_add_items", False) else None
        return str(spec) if spec else None

    def counters(self) -> dict[str, int]:
        c = self._counters
        with c.lock:
            return {"add_requests": c.add_requests, "items_added": c.items_added, "items_updated": c.items_updated}

    # -- validation ----------------------------------------------------------------------------
    def _check_k(self, k: int, snap: Snapshot) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise ServeError(422, "invalid_k", f"k must be an integer, got {type(k).__name__}")
        if k < 1:
            raise ServeError(422, "invalid_k", f"k must be at least 1, got {k}")
        if k > self.max_k:
            raise ServeError(
                422,
                "invalid_k",
                f"k={k} is above this server's limit of {self.max_k} (the catalogue has {snap.model.n_items} "
                f"items); a k up to the limit returns at most the whole catalogue",
                max_k=self.max_k,
            )

    @staticmethod
    def _check_histories(histories: Sequence[Sequence[str]], snap: Snapshot) -> None:
        if len(histories) == 0:
            raise ServeError(422, "empty_batch", "no histories given")
        if len(histories) > MAX_BATCH:
            raise ServeError(422, "batch_too_large", f"{len(histories)} histories; at most {MAX_BATCH} per request")
        empty = [i for i, h in enumerate(histories) if len(h) == 0]
        if empty:
            where = "history is empty" if len(histories) == 1 else f"histories {empty} are empty"
            raise ServeError(422, "empty_history", f"{where}: give at least one item id", empty=empty)
        long = [i for i, h in enumerate(histories) if len(h) > MAX_HISTORY]
        if long:
            raise ServeError(422, "history_too_long", f"histories {long} have more than {MAX_HISTORY} items")
        unknown: dict[str, None] = {}
        for h in histories:
            for e in h:
                if not isinstance(e, str):
                    raise ServeError(422, "invalid_item_id", f"item ids are strings, got {e!r}")
                if e not in snap.index:
                    unknown[e] = None
        if unknown:
            ids = list(unknown)
            shown = ", ".join(ids[:50]) + (f" … ({len(ids)} in all)" if len(ids) > 50 else "")
            raise ServeError(422, "unknown_items", f"unknown item ids: {shown}", unknown_ids=ids)

    # -- adding items --------------------------------------------------------------------------
    def add_items(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Add or update items (``{"id", "text", "title"?, "vector"?, ...}``); persisted before returning."""
        if self.read_only:
            raise ServeError(409, "read_only", f"items cannot be added on this server: {self.read_only}")
        if not items:
            raise ServeError(422, "no_items", "no items given")
        if len(items) > MAX_ITEMS_PER_REQUEST:
            raise ServeError(422, "too_many_items", f"{len(items)} items; at most {MAX_ITEMS_PER_REQUEST} per request")
        entries = [_entry(it) for it in items]
        ids = [e["id"] for e in entries]
        dups = sorted({i for i in ids if ids.count(i) > 1})
        if dups:
            raise ServeError(422, "duplicate_items", f"item ids given twice in one request: {', '.join(dups)}")
        with self._write_lock:
            snap = self._snap
            model = snap.model
            if not getattr(model, "can_add_items", False):
                raise ServeError(
                    409,
                    "cannot_add_items",
                    f"model {model.name!r} cannot score items it was not trained on, so items cannot be added; "
                    "serve a run whose model can (e.g. pad)",
                    model=model.name,
                )
            self._vectorise(entries, model)
            grown = copy.deepcopy(model)
            before = {e["id"] for e in entries if e["id"] in snap.index}
            n_new = _apply(grown, entries)
            self._append_log(entries)
            added = _merge_meta(snap.added, entries, before)
            self._snap = self._snapshot(grown, added, snap.version + 1)
        c = self._counters
        with c.lock:
            c.add_requests += 1
            c.items_added += n_new
            c.items_updated += len(entries) - n_new
        log.info("added %d and updated %d items (now %d)", n_new, len(entries) - n_new, grown.n_items)
        return {"added": n_new, "updated": len(entries) - n_new, "n_items": grown.n_items, "ids": ids}

    def _vectorise(self, entries: list[dict[str, Any]], model: Recommender) -> None:
        """Give every entry a vector: its own, or its text embedded like ``PAD.add_items`` does."""
        dim = model.config.get("text_dim")
        missing = [e for e in entries if e["vector"] is None]
        if missing:
            embed = self._get_embedder(model, [e["id"] for e in missing])
            for e in missing:  # PAD.add_items' rules: embed text, else title, else "item <id>"; title = title or text
                e["title"] = e["title"] or e["text"]
            texts = [e["text"] or e["title"] or f"item {e['id']}" for e in missing]
            vecs = np.asarray(embed(texts), dtype=np.float32)
            if dim and vecs.shape != (len(missing), dim):
                raise ServeError(
                    422,
                    "encoder_mismatch",
                    f"the text encoder gives vectors of shape {vecs.shape[1:]}, but model {model.name!r} has text "
                    f"dim {dim} (trained with another encoder?); send each item's 'vector' ({dim} floats)",
                )
            for e, v in zip(missing, vecs, strict=True):
                e["vector"] = [float(x) for x in v]
        if dim:
            bad = [e["id"] for e in entries if len(e["vector"]) != dim]
            if bad:
                raise ServeError(
                    422, "bad_vector", f"'vector' must have {dim} values (the run's text dim) for: {', '.join(bad)}"
                )
        for e in entries:
            if not np.isfinite(np.asarray(e["vector"], dtype=np.float64)).all():
                raise ServeError(422, "bad_vector", f"'vector' of item {e['id']} has NaN or infinite values")

    def _get_embedder(self, model: Recommender, ids: list[str]) -> Embedder:
        """The text embedder, loading the encoder on first use (callers hold the write lock)."""
        if self._embedder is not None:
            return self._embedder
        spec = self._embed_spec
        if spec == AUTO:
            spec = model.config.get("encoder")
        no_text = f"items without 'vector': {', '.join(ids)}; send each item's text vector ('vector', "
        no_text += f"{model.config.get('text_dim')} floats)"
        if not spec:
            raise ServeError(422, "missing_vector", f"{no_text}: this server has no text encoder")
        try:
            from padrec.text import embed_texts, load_encoder

            encoder = load_encoder(spec)
        except Exception as e:  # a missing package or model folder: the client can still send vectors
            log.warning("text encoder %r unavailable: %s", spec, e)
            raise ServeError(422, "missing_vector", f"{no_text}: the text encoder {spec!r} is unavailable ({e})") from e
        log.info("loaded text encoder %r for added items", spec)
        self._embedder = lambda texts: embed_texts(list(texts), encoder)
        return self._embedder

    def _append_log(self, entries: list[dict[str, Any]]) -> None:
        """One line per request, one write, fsync: a crash leaves the old log plus at most a torn tail."""
        line = (json.dumps({"time": time.time(), "items": entries}, separators=(",", ":")) + "\n").encode()
        created = not self.log_path.exists()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)  # never leave a partial line for later appends to follow
                raise
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.log_path.parent)

    def _replay(self, model: Recommender) -> dict[str, dict[str, Any]]:
        """Re-apply the log to the freshly loaded model; drop (and truncate) a torn last line."""
        if not self.log_path.exists():
            return {}
        raw = self.log_path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            log.warning(
                "%s: dropping a torn last line (%d bytes) from an interrupted add", self.log_path, len(raw) - end
            )
            with open(self.log_path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        entries: list[dict[str, Any]] = []
        for n, line in enumerate(raw[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.extend(json.loads(line)["items"])
            except (ValueError, KeyError, TypeError) as e:
                raise RuntimeError(f"{self.log_path} line {n} is corrupt ({e}); fix or remove it") from None
        if not entries:
            return {}
        if not getattr(model, "can_add_items", False):
            raise RuntimeError(f"{self.log_path} holds added items but model {model.name!r} cannot add items")
        trained = {str(e) for e in model.item_ids[1:]}
        before = {e["id"] for e in entries if e["id"] in trained}
        _apply(model, entries)
        log.info("replayed %d added/updated items from %s", len(entries), self.log_path)
        return _merge_meta({}, entries, before)

    def _snapshot(self, model: Recommender, added: Mapping[str, dict[str, Any]], version: int) -> Snapshot:
        index = {str(e): i for i, e in enumerate(model.item_ids) if i}
        model.to_internal([])  # build the model's own id cache before readers share it
        ann = None
        if self.ann_kind:
            from padrec.serve.ann import DotProductIndex

            ann = DotProductIndex(model, kind=self.ann_kind)
        return Snapshot(model=model, index=index, added=added, version=version, ann=ann)


# -- helpers ---------------------------------------------------------------------------------
_KNOWN = ("id", "title", "text", "vector")


def _entry(item: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical log form of a posted item: id, title, text, vector (or None) and any extra fields."""
    if not isinstance(item, Mapping):
        raise ServeError(422, "invalid_item", f"an item must be an object, got {type(item).__name__}")
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise ServeError(422, "invalid_item", f"every item needs a non-empty string 'id', got {item_id!r}")
    vector = item.get("vector")
    return {
        "id": item_id.strip(),
        "title": str(item.get("title") or ""),
        "text": str(item.get("text") or ""),
        "vector": None if vector is None else [float(x) for x in vector],
        "extra": {k: v for k, v in item.items() if k not in _KNOWN},
    }


def _apply(model: Recommender, entries: Sequence[Mapping[str, Any]]) -> int:
    """Grow ``model`` by ``entries`` in one ``add_item_vectors`` call; returns how many ids were new.

    Used live and on replay. A repeated id (only in a replayed log) keeps its first position, its last
    vector and its last non-empty title, exactly as one call per entry would give.
    """
    merged: dict[str, dict[str, Any]] = {}
    for e in entries:
        old = merged.get(e["id"])
        merged[e["id"]] = {**e, "title": e["title"] or (old["title"] if old else "")}
    ids = list(merged)
    try:
        vecs = np.asarray([merged[i]["vector"] for i in ids], dtype=np.float32)
        return model.add_item_vectors(ids, vecs, [merged[i]["title"] for i in ids])
    except NotImplementedError as e:
        raise ServeError(409, "cannot_add_items", str(e), model=model.name) from None
    except (ValueError, TypeError) as e:
        raise ServeError(422, "invalid_items", str(e)) from None


def _merge_meta(
    old: Mapping[str, dict[str, Any]], entries: Sequence[Mapping[str, Any]], trained: set[str]
) -> dict[str, dict[str, Any]]:
    out = dict(old)
    for e in entries:
        prev = out.get(e["id"], {})
        source = prev.get("source") or ("updated" if e["id"] in trained else "added")
        out[e["id"]] = {"source": source, "text": e["text"], "extra": {**prev.get("extra", {}), **e["extra"]}}
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
