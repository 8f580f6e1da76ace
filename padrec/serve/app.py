"""The FastAPI app over a :class:`~padrec.serve.service.RecService`.

Every refusal is a JSON body ``{"detail": message, "code": code, ...}``: 400 for malformed JSON, 422 for
invalid requests (wrong types, empty history, unknown ids listed in ``unknown_ids``, k out of range),
404 for unknown items, 409 when the model cannot add items. Anything unexpected is logged with its
traceback and answered with a short 500. Scoring is CPU-bound torch work and never runs on the event
loop: by default the recommend endpoints queue their (validated) requests for a
:class:`~padrec.serve.batching.Batcher`, whose one thread scores concurrent requests together, and await
the result; with ``max_batch=1`` (no batching) they are plain ``def`` endpoints, each request scored on
its own in the server's thread pool. The other endpoints are plain ``def`` (thread pool) too.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from padrec.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WAIT_MS
from padrec.serve.schemas import (
    AddItemsResponse,
    BatchRequest,
    BatchResponse,
    Health,
    ItemIn,
    ItemOut,
    RecommendRequest,
    RecommendResponse,
    error_responses,
)
from padrec.serve.service import RecService, ServeError

log = logging.getLogger("padrec.serve")


class Metrics:
    """Request counters and a latency summary per route (over the last ``window`` requests of each)."""

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._routes: dict[str, dict[str, Any]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            r = self._routes.get(route)
            if r is None:
                r = self._routes[route] = {
                    "requests": 0,
                    "errors_4xx": 0,
                    "errors_5xx": 0,
                    "lat": deque(maxlen=self.window),
                }
            r["requests"] += 1
            r["errors_4xx"] += 400 <= status < 500
            r["errors_5xx"] += status >= 500
            r["lat"].append(seconds)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            routes = {k: {**v, "lat": list(v["lat"])} for k, v in self._routes.items()}
        out: dict[str, Any] = {
            "requests": sum(r["requests"] for r in routes.values()),
            "errors_4xx": sum(r["errors_4xx"] for r in routes.values()),
            "errors_5xx": sum(r["errors_5xx"] for r in routes.values()),
            "routes": {},
        }
        for name, r in sorted(routes.items()):
            lat = np.asarray(r.pop("lat")) * 1000
            r["latency_ms"] = (
                {
                    "window": int(lat.size),
                    "mean": float(lat.mean()),
                    "p50": float(np.percentile(lat, 50)),
                    "p90": float(np.percentile(lat, 90)),
                    "p99": float(np.percentile(lat, 99)),
                    "max": float(lat.max()),
                }
                if lat.size
                else None
            )
            out["routes"][name] = r
        return out


class _Guard:
    """ASGI middleware: times every request under its route template and turns crashes into a JSON 500.

    Catching here (inside Starlette's outermost error middleware, which re-raises to the server) keeps
    the client's keep-alive connection usable and logs each crash once, with its traceback.
    """

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status, started = 500, False

        async def send_status(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            if started:
                raise
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            await _internal_error(exc)(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(f"{scope['method']} {route}", status, time.perf_counter() - t0)


def _internal_error(exc: Exception) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        {"detail": f"internal server error ({type(exc).__name__}); see the server log", "code": "internal"},
        status_code=500,
    )


def _validation_message(errors: list[dict[str, Any]], body: Any) -> tuple[int, str, list[dict[str, Any]]]:
    """(status, one-line message, cleaned errors); 400 for unparsable JSON, else 422."""
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "could not parse")
        return 400, f"malformed JSON body: {reason}", [{"loc": ["body"], "msg": str(reason), "type": "json_invalid"}]
    # a body that may be one object or a list (POST /items) reports each union branch: keep the one sent
    sent_list = isinstance(body, list)
    tagged = [e for e in errors if len(e.get("loc", ())) > 1 and "ItemIn" in str(e["loc"][1])]
    if tagged:
        errors = [e for e in tagged if str(e["loc"][1]).startswith("list[") == sent_list] or tagged
        errors = [{**e, "loc": (e["loc"][0], *e["loc"][2:])} for e in errors]
    clean = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors
    ]
    if any(e["loc"] == ["body"] and e["type"] == "missing" for e in clean):
        return 422, "request body is missing: send a JSON object", clean
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in clean[:5]]
    more = f" (+{len(clean) - 5} more)" if len(clean) > 5 else ""
    return 422, "invalid request: " + "; ".join(parts) + more, clean


def create_app(
    service: RecService, *, max_batch: int = DEFAULT_MAX_BATCH, batch_wait_ms: float = DEFAULT_WAIT_MS
) -> Any:
    """A FastAPI app serving ``service`` (imports fastapi; ``pip install 'padrec[serve]'``).

    Concurrent recommend requests are scored together, up to ``max_batch`` histories after waiting at
    most ``batch_wait_ms`` for company; ``max_batch=1`` scores each request alone in the thread pool.
    """
    from contextlib import asynccontextmanager

    from fastapi import Body, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    import padrec
    from padrec.serve.batching import Batcher

    batcher = Batcher(service, max_batch, batch_wait_ms) if max_batch > 1 else None

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        # The loaded run is ~2e5 long-lived objects (ids, titles, modules) that every full garbage collection
        # walks again: 110-150 ms on ml-1m, a pause about 1% of requests sat behind under load. Frozen, they
        # are never scanned; collections then see only the objects requests create.
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()  # back to normal collection (servers in tests, notebooks)
        if batcher is not None:
            batcher.close()

    app = FastAPI(
        lifespan=lifespan,
        title="padrec",
        version=padrec.__version__,
        description="Recommendations from a saved padrec run; items can be added live to models that can "
        "score items they were not trained on (PAD).",
    )
    metrics = Metrics()
    app.state.service, app.state.metrics, app.state.batcher = service, metrics, batcher
    app.add_middleware(_Guard, metrics=metrics)

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, errors = _validation_message(list(exc.errors()), exc.body)
        code = "malformed_json" if status == 400 else "invalid_request"
        return JSONResponse({"detail": message, "code": code, "errors": errors}, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # errors outside _Guard
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _internal_error(exc)

    if batcher is None:

        @app.post("/recommend", response_model=RecommendResponse, responses=error_responses(400, 422))
        def recommend(req: RecommendRequest) -> dict[str, Any]:
            """Top-k items for one history."""
            out = service.recommend([req.history], k=req.k, exclude_seen=req.exclude_seen, exact=req.exact)
            return {"items": out.items[0], "exact": out.exact, "model": service.snapshot.model.name}

        @app.post("/recommend/batch", response_model=BatchResponse, responses=error_responses(400, 422))
        def recommend_batch(req: BatchRequest) -> dict[str, Any]:
            """Top-k items for each of many histories, scored in one batch."""
            out = service.recommend(req.histories, k=req.k, exclude_seen=req.exclude_seen, exact=req.exact)
            return {"results": out.items, "exact": out.exact, "model": service.snapshot.model.name}

    else:

        @app.post("/recommend", response_model=RecommendResponse, responses=error_responses(400, 422))
        async def recommend(req: RecommendRequest) -> dict[str, Any]:
            """Top-k items for one history (scored together with concurrent requests)."""
            job = batcher.submit([req.history], k=req.k, exclude_seen=req.exclude_seen, exact=req.exact)
            out = await asyncio.wrap_future(job)
            return {"items": out.items[0], "exact": out.exact, "model": service.snapshot.model.name}

        @app.post("/recommend/batch", response_model=BatchResponse, responses=error_responses(400, 422))
        async def recommend_batch(req: BatchRequest) -> dict[str, Any]:
            """Top-k items for each of many histories, scored in one batch."""
            job = batcher.submit(req.histories, k=req.k, exclude_seen=req.exclude_seen, exact=req.exact)
            out = await asyncio.wrap_future(job)
            return {"results": out.items, "exact": out.exact, "model": service.snapshot.model.name}

    @app.post("/items", response_model=AddItemsResponse, responses=error_responses(400, 409, 422))
    def add_items(items: ItemIn | list[ItemIn] = Body(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI idiom)
        """Add or update one item or a list; persisted in the run directory before the reply."""
        batch = items if isinstance(items, list) else [items]
        return service.add_items([it.model_dump(exclude_none=False) for it in batch])

    @app.get("/items/{item_id:path}", response_model=ItemOut, responses=error_responses(404))
    def get_item(item_id: str) -> dict[str, Any]:
        """One item: title, internal id, and for items added here their text and extra fields."""
        return service.get_item(item_id)

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """Model, dataset and item count."""
        return service.health()

    @app.get("/metrics")
    def get_metrics() -> dict[str, Any]:
        """Request and error counters, latency summary per route, items added."""
        batching = batcher.stats() if batcher is not None else None
        return {
            **metrics.summary(),
            **service.counters(),
            "batching": batching,
            "uptime_s": time.time() - service.started,
        }

    return app
