"""Request and response bodies (pydantic); they generate the OpenAPI schema at ``/docs`` and ``/openapi.json``.

Types are strict: item ids are JSON strings (``"1193"``, not ``1193``), ``k`` an integer and flags booleans,
so a client sending the wrong type gets a 422 naming the field instead of a silent coercion. Unknown
fields in recommend requests are errors too (a misspelt ``excludeSeen`` must not be ignored).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict

from padrec.serve.service import DEFAULT_MAX_K, MAX_BATCH, MAX_HISTORY

ItemId = Annotated[str, Strict(), Field(min_length=1, max_length=1024)]
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
K = Annotated[
    int,
    Strict(),
    Field(
        ge=1,
        description=f"How many items (1 .. the server's --max-k, default {DEFAULT_MAX_K}); a k above the "
        "catalogue size returns the whole catalogue.",
    ),
]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Closed):
    history: list[ItemId] = Field(
        description="External item ids, oldest first; must not be empty.", max_length=MAX_HISTORY
    )
    k: K = 10
    exclude_seen: Annotated[bool, Strict()] = Field(True, description="Never recommend items in the history.")
    exact: Annotated[bool, Strict()] | None = Field(
        None,
        description="true: exact scoring; false: the approximate index (servers started with --ann); "
        "null: the index when there is one, else exact.",
    )


class BatchRequest(_Closed):
    histories: list[list[ItemId]] = Field(description="Histories as in /recommend.", max_length=MAX_BATCH)
    k: K = 10
    exclude_seen: Annotated[bool, Strict()] = True
    exact: Annotated[bool, Strict()] | None = None


class RecItem(BaseModel):
    item_id: str
    score: float
    title: str


class RecommendResponse(BaseModel):
    items: list[RecItem]
    exact: bool = Field(description="Whether exact scoring produced this list.")
    model: str


class BatchResponse(BaseModel):
    results: list[list[RecItem]]
    exact: bool
    model: str


class ItemIn(BaseModel):
    """An item to add (new id) or update (known id). Extra fields are kept and shown by ``GET /items/{id}``."""

    model_config = ConfigDict(extra="allow")

    id: ItemId
    text: Annotated[str, Strict()] = Field("", description="The item's text (what the run's encoder embeds).")
    title: Annotated[str, Strict()] | None = None
    vector: list[Finite] | None = Field(
        None,
        description="The item's text vector (the run's text dim). Optional when the server has a text encoder "
        "(GET /health: text_encoder): then the text (else the title) is embedded with it.",
    )


class AddItemsResponse(BaseModel):
    added: int
    updated: int
    n_items: int
    ids: list[str]


class ItemOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    title: str
    internal_id: int
    source: str = Field(description="trained, added (through this API) or updated (trained, new text).")
    text: str | None = None


class Health(BaseModel):
    status: str
    model: str
    dataset: str | None
    n_items: int
    can_add_items: bool
    index: str | None
    text_encoder: str | None = Field(description="Embeds items posted without 'vector'; null: vectors required.")
    version: int = Field(description="Bumped by every accepted POST /items.")
    run_dir: str
    read_only: str | None = Field(None, description="Why POST /items is refused here (null: it is not).")
    worker_pid: int | None = Field(None, description="The answering worker process (--workers > 1: one of many).")


class ErrorBody(BaseModel):
    detail: str
    code: str
    model_config = ConfigDict(extra="allow")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody} for s in statuses}
