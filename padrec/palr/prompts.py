"""PALR's prompts as versioned templates, and how items are written in them.

Change any template (or how an item is rendered) and bump :data:`PROMPT_VERSION`: instruction data,
cached profiles and fine-tuned models record the version they were made with, and a run refuses to
mix versions. Pure Python (no torch, no transformers), so rendering is cheap and testable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from padrec.data.dataset import SeqDataset

PROMPT_VERSION = "palr-prompts-1"

PROFILE_TEMPLATE = (
    "Here are the {noun}s a user interacted with, oldest first:\n"
    "{history}\n"
    "\n"
    "Describe the user's preferences with at most {k} short keywords (a genre, theme, style or brand). "
    "For each keyword, give the numbers of the {noun}s above that support it.\n"
    'Answer with one keyword per line, in the form "keyword: 1, 4".'
)

RECOMMEND_TEMPLATE = (
    "Task: recommend the next {n} {noun}s this user will interact with.\n"
    "{profile_line}"
    "The user's last {h} {noun}s, oldest first:\n"
    "{history}\n"
    "\n"
    'Answer with {n} {noun} titles, best first, one per line, in the form "1. title".'
)

RECOMMEND_RETRIEVAL_TEMPLATE = (
    "Task: choose the {n} {noun}s this user is most likely to interact with next, from the candidates below.\n"
    "{profile_line}"
    "The user's last {h} {noun}s, oldest first:\n"
    "{history}\n"
    "\n"
    "Candidates:\n"
    "{candidates}\n"
    "\n"
    'Answer with {n} titles copied exactly from the candidates, best first, one per line, in the form "1. title".'
)

#: used when a tokenizer has no chat template (a base model, a tiny test tokenizer)
LABELLED_RETRIEVAL_TEMPLATE = (
    "Task: choose the {noun} this user is most likely to interact with next, from the candidates below.\n"
    "{profile_line}"
    "The user's last {h} {noun}s, oldest first:\n"
    "{history}\n"
    "\n"
    "Candidates:\n"
    "{candidates}\n"
    "\n"
    "Answer with the letter of the best candidate only."
)

#: the verbalizer ranker appends this to the chat-wrapped prompt and reads the next token: a candidate's label
VERBALIZER_PREFIX = "["
#: one-token labels for the verbalizer ranker, in the order candidates are listed
LABELS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

PLAIN_CHAT_FORMAT = "### Instruction:\n{prompt}\n\n### Response:\n"

_YEAR_END = re.compile(r"\((\d{4})\)\s*$")
_WS = re.compile(r"\s+")


def _clean(text: str, max_chars: int) -> str:
    text = _WS.sub(" ", str(text)).strip()
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def _split_attrs(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    parts = re.split(r"[|,;]", str(value))
    return [p.strip() for p in parts if p.strip() and p.strip().lower() not in ("nan", "none", "(no genres listed)")]


def domain_noun(dataset_name: str) -> str:
    """What an item is called in prompts: movie (MovieLens), product (Amazon), item otherwise."""
    name = dataset_name.lower()
    if name.startswith("ml-") or "movielens" in name:
        return "movie"
    if name.startswith("amazon") or "beauty" in name:
        return "product"
    return "item"


@dataclass(frozen=True)
class ItemCatalog:
    """Rendered text per internal item id (index 0 = padding) plus each item's attributes.

    ``item_format``: ``title_year`` writes MovieLens items as "Title (year)" (the year is appended only
    when the title does not already end with it), ``title`` writes the title alone (Amazon), ``id_title``
    writes "ASIN (title)" as the PALR paper does for Beauty, ``auto`` picks ``title_year`` when the
    dataset has years and ``title`` otherwise. Items without a title are written "item <external id>".
    """

    noun: str
    texts: tuple[str, ...]
    attributes: tuple[tuple[str, ...], ...]
    external_ids: tuple[str, ...]

    @classmethod
    def from_dataset(cls, ds: SeqDataset, item_format: str = "auto", max_title_chars: int = 100) -> ItemCatalog:
        table = ds.item_table
        n = ds.n_items + 1
        titles = ds.titles()
        years = [""] * n
        if table is not None and "year" in table:
            years = ["" if v is None else str(v).strip() for v in table["year"].tolist()]
            years = [y[:4] if re.fullmatch(r"\d{4}(\.0)?", y) else "" for y in years]
        if item_format == "auto":
            has_year = any(years) or sum(bool(_YEAR_END.search(t)) for t in titles) > 0.5 * max(n - 1, 1)
            item_format = "title_year" if has_year else "title"
        if item_format not in ("title", "title_year", "id_title"):
            raise ValueError(f"unknown item_format {item_format!r}: expected auto, title, title_year or id_title")
        ext = [str(e) for e in ds.item_ids]
        texts = [""]
        for i in range(1, n):
            title = _clean(titles[i], max_title_chars) if titles[i] else ""
            if not title:
                texts.append(f"item {ext[i]}")
                continue
            if item_format == "title_year" and years[i] and not _YEAR_END.search(title):
                title = f"{title} ({years[i]})"
            elif item_format == "id_title":
                title = f"{ext[i]} ({title})"
            texts.append(title)
        attrs: list[tuple[str, ...]] = [()] * n
        if table is not None:
            for col in ("genres", "categories", "category"):
                if col in table:
                    attrs = [tuple(_split_attrs(v)) for v in table[col].tolist()]
                    attrs[0] = ()
                    break
        return cls(noun=domain_noun(ds.name), texts=tuple(texts), attributes=tuple(attrs), external_ids=tuple(ext))

    def __len__(self) -> int:
        return len(self.texts)

    def render(self, item: int) -> str:
        return self.texts[int(item)]


def numbered(lines: Sequence[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(lines, 1))


def history_lines(catalog: ItemCatalog, history: Sequence[int], with_attributes: bool = False) -> list[str]:
    out = []
    for i in history:
        text = catalog.render(i)
        attrs = catalog.attributes[int(i)]
        if with_attributes and attrs:
            text = f"{text} [{', '.join(attrs)}]"
        out.append(text)
    return out


def profile_text(catalog: ItemCatalog, keywords: Sequence[dict]) -> str:
    """``keyword (Item A; Item B); keyword (...)``: each keyword with the history items that support it."""
    parts = []
    for kw in keywords:
        items = [catalog.render(i) for i in kw.get("items", [])]
        parts.append(f"{kw['keyword']} ({'; '.join(items)})" if items else str(kw["keyword"]))
    return "; ".join(parts)


def profile_prompt(catalog: ItemCatalog, history: Sequence[int], k: int = 5) -> str:
    """Ask for at most ``k`` preference keywords, each linked to the numbers of supporting history items."""
    return PROFILE_TEMPLATE.format(
        noun=catalog.noun, history=numbered(history_lines(catalog, history, with_attributes=True)), k=k
    )


def _profile_line(profile: str | None) -> str:
    return f"User profile: {profile}\n" if profile else ""


def recommend_prompt(catalog: ItemCatalog, history: Sequence[int], profile: str | None, n: int = 10) -> str:
    """The *Recommend* task (PALR v1): history (+ profile) → the next ``n`` items, no candidates."""
    return RECOMMEND_TEMPLATE.format(
        n=n,
        noun=catalog.noun,
        profile_line=_profile_line(profile),
        h=len(history),
        history=numbered(history_lines(catalog, history)),
    )


def recommend_retrieval_prompt(
    catalog: ItemCatalog, history: Sequence[int], profile: str | None, candidates: Sequence[int], n: int = 10
) -> str:
    """The *Recommend_Retrieval* task (PALR v2): history (+ profile) + candidates → ``n`` of the candidates."""
    return RECOMMEND_RETRIEVAL_TEMPLATE.format(
        n=n,
        noun=catalog.noun,
        profile_line=_profile_line(profile),
        h=len(history),
        history=numbered(history_lines(catalog, history)),
        candidates="\n".join(f"- {catalog.render(c)}" for c in candidates),
    )


def labelled_retrieval_prompt(
    catalog: ItemCatalog, history: Sequence[int], profile: str | None, candidates: Sequence[int]
) -> str:
    """The verbalizer task: candidates listed as ``[A] title``; the answer is one label."""
    if len(candidates) > len(LABELS):
        raise ValueError(f"verbalizer ranking labels at most {len(LABELS)} candidates, got {len(candidates)}")
    return LABELLED_RETRIEVAL_TEMPLATE.format(
        noun=catalog.noun,
        profile_line=_profile_line(profile),
        h=len(history),
        history=numbered(history_lines(catalog, history)),
        candidates="\n".join(f"[{lab}] {catalog.render(c)}" for lab, c in zip(LABELS, candidates, strict=False)),
    )


def answer_text(catalog: ItemCatalog, items: Sequence[int]) -> str:
    """The answer the model is trained to write: ``1. title`` lines, best first."""
    return numbered([catalog.render(i) for i in items])


#: the likelihood ranker appends this to the chat-wrapped prompt and scores " <title>\n" after it,
#: i.e. exactly the first line of an :func:`answer_text`
ANSWER_PREFIX = "1."
