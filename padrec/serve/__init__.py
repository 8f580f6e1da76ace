"""Serve a saved padrec run over HTTP: ``padrec serve --run DIR`` (FastAPI + uvicorn, the ``serve`` extra).

Layers, each usable on its own:

* :mod:`padrec.serve.service` — :class:`~padrec.serve.service.RecService`: validation, exact scoring through
  ``Recommender.recommend`` (the same code path as ``padrec recommend``), live item additions persisted in
  ``RUN/added_items.jsonl``, copy-on-write model swaps. No web framework imported.
* :mod:`padrec.serve.batching` — :class:`~padrec.serve.batching.Batcher`: concurrent recommend requests
  scored together on one worker thread (the event loop never scores).
* :mod:`padrec.serve.ann` — optional faiss index for models that score by a dot product (sequential models).
* :mod:`padrec.serve.app` — the FastAPI app (``create_app``): endpoints, error bodies, metrics.
* :mod:`padrec.serve.server` — run it (blocking, or in a background thread for tests and benchmarks).

Nothing here is imported by ``import padrec``; fastapi is imported only when a server is built.
"""
