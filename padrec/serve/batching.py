"""Micro-batching: concurrent recommend requests are scored together, with one model call, off the event loop.

Why: with one thread per request, 32 concurrent forward passes fight over the GIL and two cores, and each
pays the per-call overhead. A single worker thread instead takes the first queued request, waits at most
``wait_ms`` (counted from that request's arrival) for others until ``max_batch`` histories are gathered,
and scores them all in one pass over the snapshot current at that moment. The window is only waited out
under concurrent load (``adaptive``: the previous batch had company), so a lone client never pays it; the
first request of a burst is scored at once while the rest of the burst queues up behind it.

Ranking is then done per request with that request's own ``k`` and ``exclude_seen`` by
``Recommender.top_items``, the ranking step of ``Recommender.recommend`` itself, so a batched
answer is the one the request would get alone: the same items in the same order, scores equal to float32
rounding (BLAS multiplies one row by the item table with another kernel than many rows, so the last bits
may differ, as they already did between ``/recommend`` and ``/recommend/batch``).

The pass is one ``model.score`` call, except for the sequential models (SASRec, BERT4Rec, GRU4Rec, Caser):
their ``score`` pads every history to ``max_len`` and costs one ``[max_len]`` forward pass per history
whatever its length, so a batch of them is scored by :func:`cropped_scorer`: histories sorted by length
into a few groups, each padded only to its longest history. That is the same function (positions count
from the most recent item, padding is masked or packed away, its embedding is zero), checked against
``model.score`` when the scorer is built; on ml-1m (mean test history 109 of 200 items) it halves the cost.

Requests are validated when submitted (:meth:`RecService.check_request`), so a bad request is refused
alone, before it can join a batch; and if a batch's scoring still fails, its requests are retried one
by one so that only the failing one gets the error. Requests answered by the approximate index
(``--ann``) are searched together per (k, exclude_seen) group, within the index's approximation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from padrec.models.base import Recommender
from padrec.serve.service import Recommendations, RecService, Snapshot

log = logging.getLogger("padrec.serve")

DEFAULT_MAX_BATCH = 64
DEFAULT_WAIT_MS = 2.0


@dataclass
class _Job:
    histories: list[list[str]]
    k: int
    exclude_seen: bool
    use_index: bool
    arrived: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)


Scorer = Callable[[Sequence[np.ndarray]], torch.Tensor]
_CROPPABLE = ("sasrec", "bert4rec", "gru4rec", "caser")
MIN_GROUP = 8  # histories per length group: smaller groups cost more in per-call overhead than padding saves
MAX_GROUPS = 4


def cropped_scorer(model: Recommender) -> Scorer | None:
    """``model.score`` for sequential models without the left padding to ``max_len``; None for other models.

    Checked once against ``model.score`` on a few histories (None, with a warning, if it ever disagrees).
    """
    from padrec.models.base import evaluating
    from padrec.models.sequential import SequentialRecommender, query_seqs

    cls = type(model)
    if not (
        isinstance(model, SequentialRecommender)
        and cls.score is SequentialRecommender.score
        and cls.query_batch is SequentialRecommender.query_batch
        and getattr(model, "net", None) is not None
        and model.net.kind in _CROPPABLE
    ):
        return None
    net, max_len = model.net, model.max_len

    @torch.inference_mode()
    def score(histories: Sequence[np.ndarray]) -> torch.Tensor:
        lengths = np.asarray([len(h) for h in histories])
        order = np.argsort(lengths, kind="stable")
        groups = np.array_split(order, max(1, min(MAX_GROUPS, len(histories) // MIN_GROUP)))
        with evaluating(net):
            items = net.item_vectors()
            device = items.device
            out = torch.empty(len(histories), items.shape[0], dtype=torch.float32)
            for rows in groups:
                width = min(max_len, max(1, int(lengths[rows].max()) + int(net.bidirectional)))
                seqs = query_seqs([histories[i] for i in rows], width, net.bidirectional, net.mask_id)
                out[torch.as_tensor(rows)] = (net.user_vectors(seqs.to(device)) @ items.T).float().cpu()
        return out

    n = model.n_items
    probe = [np.arange(1, m + 1, dtype=np.int64) % n + 1 for m in (1, 2, 5, max_len + 3)] * MIN_GROUP
    want, got = model.score(probe).float(), score(probe)
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-4):
        log.warning("%s: scores without padding differ from model.score; batches use model.score", model.name)
        return None
    return score


def rank(
    model: Recommender,
    histories: Sequence[Sequence[str]],
    ks: Sequence[int],
    exclude_seen: Sequence[bool],
    score: Scorer | None = None,
) -> list[list[dict[str, Any]]]:
    """``Recommender.recommend`` for many requests at once: one scoring pass, each row ranked by its own rules.

    ``score`` replaces ``model.score`` (e.g. :func:`cropped_scorer`).
    """
    internal = [model.to_internal(h) for h in histories]
    with torch.no_grad():
        scores = (score or model.score)(internal)
    return model.top_items(scores, internal, ks, exclude_seen)


class Batcher:
    """Queue of recommend requests in front of a :class:`RecService`, served by one daemon thread.

    ``submit`` validates and returns a :class:`concurrent.futures.Future` of :class:`Recommendations`
    (an async caller awaits it with ``asyncio.wrap_future``; the event loop never scores).
    """

    def __init__(
        self,
        service: RecService,
        max_batch: int = DEFAULT_MAX_BATCH,
        wait_ms: float = DEFAULT_WAIT_MS,
        adaptive: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if wait_ms < 0:
            raise ValueError(f"wait_ms must not be negative, got {wait_ms}")
        self.service, self.max_batch, self.wait, self.adaptive = service, max_batch, wait_ms / 1000, adaptive
        self._had_company = False  # the previous batch held more than one request
        self._scorer: tuple[Recommender, Scorer | None] | None = None  # (model, its cropped scorer)
        self._queue: deque[_Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.batches = self.requests = self.histories = 0  # totals, for /metrics
        self._thread = threading.Thread(target=self._run, name="padrec-batcher", daemon=True)
        self._thread.start()

    def submit(
        self, histories: Sequence[Sequence[str]], k: int = 10, exclude_seen: bool = True, exact: bool | None = None
    ) -> Future:
        """Validate now (raises ``ServeError``), score later; the future holds :class:`Recommendations`."""
        use_index = self.service.check_request(histories, k, exact)
        job = _Job([list(h) for h in histories], k, exclude_seen, use_index)
        with self._cv:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(job)
            self._cv.notify()
        return job.future

    def recommend(
        self, histories: Sequence[Sequence[str]], k: int = 10, exclude_seen: bool = True, exact: bool | None = None
    ) -> Recommendations:
        """Blocking form of :meth:`submit` (threads, tests)."""
        return self.submit(histories, k, exclude_seen, exact).result()

    def stats(self) -> dict[str, Any]:
        return {
            "max_batch": self.max_batch,
            "wait_ms": self.wait * 1000,
            "batches": self.batches,
            "requests": self.requests,
            "mean_histories_per_batch": self.histories / self.batches if self.batches else 0.0,
        }

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests; those already queued are still answered."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    # -- worker thread -------------------------------------------------------------------------
    def _next_batch(self) -> list[_Job] | None:
        with self._cv:
            while not self._queue:
                if self._closed:
                    return None
                self._cv.wait()
            batch = [self._queue.popleft()]
            n = len(batch[0].histories)
            wait = self.wait if self._had_company or not self.adaptive else 0.0
            deadline = batch[0].arrived + wait
            while n < self.max_batch:
                if not self._queue:
                    left = deadline - time.perf_counter()
                    if left <= 0 or self._closed:
                        break
                    self._cv.wait(left)
                    continue
                if n + len(self._queue[0].histories) > self.max_batch:
                    break  # it starts the next batch
                job = self._queue.popleft()
                batch.append(job)
                n += len(job.histories)
            self._had_company = len(batch) > 1
        return batch

    def _run(self) -> None:
        model = self.service.snapshot.model
        self._scorer = (model, cropped_scorer(model))  # built (and checked) before the first request waits on it
        while (batch := self._next_batch()) is not None:
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]  # drop requests given up on
            if not live:
                continue
            try:
                self._answer(live, self.service.snapshot)
            except BaseException as e:  # never let the worker die with futures unresolved
                log.exception("batch of %d requests failed", len(live))
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(e)
            self.batches += 1
            self.requests += len(live)
            self.histories += sum(len(j.histories) for j in live)

    def _answer(self, jobs: list[_Job], snap: Snapshot) -> None:
        exact = [j for j in jobs if not j.use_index]
        if exact:
            if self._scorer is None or self._scorer[0] is not snap.model:
                self._scorer = (snap.model, cropped_scorer(snap.model))
            score = self._scorer[1]
            self._resolve(exact, lambda js: self._exact(js, snap, score))
        groups: dict[tuple[int, bool], list[_Job]] = defaultdict(list)
        for j in jobs:
            if j.use_index:
                groups[(j.k, j.exclude_seen)].append(j)
        for (k, excl), group in groups.items():
            self._resolve(group, lambda js, k=k, excl=excl: self._indexed(js, snap, k, excl))

    @staticmethod
    def _resolve(jobs: list[_Job], score: Any) -> None:
        """Score ``jobs`` together; on failure, one by one, so that only a failing request fails."""
        try:
            results = score(jobs)
        except Exception as e:
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
                return
            log.warning("a batch of %d requests failed (%s); scoring them one by one", len(jobs), e)
            for j in jobs:
                Batcher._resolve([j], score)
            return
        for j, r in zip(jobs, results, strict=True):
            j.future.set_result(r)

    @staticmethod
    def _exact(jobs: list[_Job], snap: Snapshot, score: Scorer | None) -> list[Recommendations]:
        flat = [h for j in jobs for h in j.histories]
        ks = [j.k for j in jobs for _ in j.histories]
        excl = [j.exclude_seen for j in jobs for _ in j.histories]
        ranked = rank(snap.model, flat, ks, excl, score)
        out, at = [], 0
        for j in jobs:
            out.append(Recommendations(ranked[at : at + len(j.histories)], exact=True))
            at += len(j.histories)
        return out

    @staticmethod
    def _indexed(jobs: list[_Job], snap: Snapshot, k: int, exclude_seen: bool) -> list[Recommendations]:
        flat = [h for j in jobs for h in j.histories]
        ranked = snap.ann.recommend(snap.model, flat, k, exclude_seen)
        out, at = [], 0
        for j in jobs:
            out.append(Recommendations(ranked[at : at + len(j.histories)], exact=False))
            at += len(j.histories)
        return out
