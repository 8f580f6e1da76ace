"""User profiles: preference keywords, each linked to the history items that support it.

Two sources, always labelled in the record's ``source``:

- ``"lm"``: a language model answers :func:`padrec.palr.prompts.profile_prompt`; its lines
  ``keyword: 1, 4`` are parsed into keywords and history items (numbers outside the history are dropped).
  An answer with no parsable keyword falls back to the rule, with ``"fallback_reason"`` saying so.
- ``"rule-based"``: the most frequent genres/categories of the history, each with its most recent
  supporting items; datasets without attributes (Amazon Beauty) use the most frequent title words.

Profiles are cached in a JSONL file keyed by (user, hash of the history the profile saw), appended one
batch at a time with a single ``write`` + ``fsync`` so an interrupted run keeps every finished batch
(a torn last line is dropped on the next load) and a rerun only generates what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from padrec.palr.prompts import PROMPT_VERSION, ItemCatalog, profile_prompt, profile_text

RULE = "rule-based"
LM = "lm"

_STOP = frozenset(
    "the and for with from into your this that oz fl ounce ounces pack count set new each inch size mini "
    "of a an in on to by or ml g lb pcs pc piece pieces free".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*\**([^:\n]{1,60}?)\**\s*(?::|\s[-–]\s)\s*(.+)$")


def history_key(history: Sequence[int]) -> str:
    """Stable key of the exact history a profile was made from."""
    return hashlib.sha256(",".join(str(int(i)) for i in history).encode()).hexdigest()[:16]


def rule_based_profile(
    catalog: ItemCatalog, history: Sequence[int], k: int = 5, items_per_keyword: int = 3
) -> list[dict[str, Any]]:
    """Top-``k`` attributes of the history by count (ties: most recent first), each with its most recent items.

    Falls back to frequent title words when no history item has attributes.
    """
    hist = [int(i) for i in history]
    per_item = [catalog.attributes[i] for i in hist]
    if not any(per_item):
        per_item = [
            tuple(dict.fromkeys(w.lower() for w in _WORD.findall(catalog.render(i)) if w.lower() not in _STOP))
            for i in hist
        ]
    counts: Counter[str] = Counter()
    last_seen: dict[str, int] = {}
    for pos, attrs in enumerate(per_item):
        for a in attrs:
            counts[a] += 1
            last_seen[a] = pos
    if not counts:
        return []
    ranked = sorted(counts, key=lambda a: (-counts[a], -last_seen[a], a))[:k]
    out = []
    for a in ranked:
        support = [hist[p] for p in range(len(hist) - 1, -1, -1) if a in per_item[p]][:items_per_keyword]
        out.append({"keyword": a, "items": support})
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", re.sub(r"\(\s*\d{4}\s*\)", "", text).casefold())).strip()


def parse_profile(
    text: str,
    history: Sequence[int],
    k: int = 5,
    items_per_keyword: int = 3,
    titles: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``keyword: 1, 4`` lines → ``[{"keyword", "items"}]`` with history item ids (1-based numbers).

    A "keyword" that merely repeats a history item's title (``titles``, as rendered in the prompt) is
    not a preference and is dropped; small models often answer that way.
    """
    hist = [int(i) for i in history]
    out: list[dict[str, Any]] = []
    seen: set[str] = {_norm(t) for t in titles or ()}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        keyword = m.group(1).strip().strip("\"'").strip()
        nums = [int(x) for x in re.findall(r"\d+", m.group(2))]
        items = list(dict.fromkeys(hist[n - 1] for n in nums if 1 <= n <= len(hist)))[:items_per_keyword]
        if not keyword or not items or _norm(keyword) in seen or keyword.isdigit():
            continue
        seen.add(_norm(keyword))
        out.append({"keyword": keyword, "items": items})
        if len(out) >= k:
            break
    return out


# -- the cache ------------------------------------------------------------------------------
def append_jsonl(path: str | Path, records: Sequence[dict]) -> None:
    """Append ``records`` with one ``write`` and an ``fsync``: a batch lands whole or (torn) is dropped on load."""
    if not records:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, repair: bool = True) -> list[dict]:
    """Every complete record; a torn last line (a crash mid-append) is dropped and, with ``repair``, cut off."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    if end < len(raw) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
    out = []
    for n, line in enumerate(raw[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            warnings.warn(f"{path}:{n}: unreadable JSON line skipped", stacklevel=2)
    return out


class ProfileStore:
    """Profiles keyed by (user, history key), backed by an append-only JSONL file (or memory only)."""

    def __init__(self, path: str | Path | None, catalog: ItemCatalog) -> None:
        self.path = Path(path) if path is not None else None
        self.catalog = catalog
        self._index = {str(e): i for i, e in enumerate(catalog.external_ids) if i}
        self.records: dict[tuple[int, str], dict] = {}
        self.stats: dict[str, float] = {"generated": 0, "lm": 0, "rule-based": 0, "lm_fallbacks": 0, "seconds": 0.0}
        if self.path is not None:
            for r in read_jsonl(self.path):
                if r.get("prompt_version") == PROMPT_VERSION:
                    self.records[(int(r["user"]), str(r["key"]))] = r

    def __len__(self) -> int:
        return len(self.records)

    def get(self, user: int, history: Sequence[int]) -> dict | None:
        return self.records.get((int(user), history_key(history)))

    def keywords(self, record: dict) -> list[dict[str, Any]]:
        """A record's keywords with internal item ids (records store external ids)."""
        return [
            {"keyword": kw["keyword"], "items": [self._index[e] for e in kw["items"] if e in self._index]}
            for kw in record.get("keywords", [])
        ]

    def text(self, user: int, history: Sequence[int]) -> str | None:
        r = self.get(user, history)
        return None if r is None else profile_text(self.catalog, self.keywords(r))

    def _record(self, user: int, history: Sequence[int], keywords: list[dict], source: str, **extra: Any) -> dict:
        ext = self.catalog.external_ids
        return {
            "user": int(user),
            "key": history_key(history),
            "source": source,
            "keywords": [{"keyword": kw["keyword"], "items": [ext[i] for i in kw["items"]]} for kw in keywords],
            "prompt_version": PROMPT_VERSION,
            **extra,
        }

    def ensure(
        self,
        users: Sequence[int],
        histories: Sequence[Sequence[int]],
        generate: Callable[[list[str]], list[str]] | None = None,
        lm_name: str | None = None,
        k: int = 5,
        items_per_keyword: int = 3,
        batch_size: int = 4,
        progress: bool = True,
    ) -> int:
        """Make every missing profile; ``generate`` (prompts → answers) makes LM profiles, else the rule.

        Returns how many were made. Each batch is appended to the file as soon as it is done.
        """
        todo: dict[tuple[int, str], tuple[int, list[int]]] = {}
        for u, h in zip(users, histories, strict=True):
            hist = [int(i) for i in h]
            key = (int(u), history_key(hist))
            if key not in self.records:
                todo.setdefault(key, (int(u), hist))
        if not todo:
            return 0
        items = list(todo.values())
        bs = batch_size if generate is not None else max(batch_size, 512)
        bar = _progress(len(items), "profiles", progress and generate is not None)
        t0 = time.perf_counter()
        try:
            for lo in range(0, len(items), bs):
                chunk = items[lo : lo + bs]
                records = []
                if generate is None:
                    for u, h in chunk:
                        kws = rule_based_profile(self.catalog, h, k, items_per_keyword)
                        records.append(self._record(u, h, kws, RULE))
                else:
                    answers = generate([profile_prompt(self.catalog, h, k) for _, h in chunk])
                    for (u, h), text in zip(chunk, answers, strict=True):
                        titles = [self.catalog.render(i) for i in h]
                        kws = parse_profile(text, h, k, items_per_keyword, titles)
                        if kws:
                            records.append(self._record(u, h, kws, LM, lm=lm_name, raw=text))
                        else:
                            self.stats["lm_fallbacks"] += 1
                            kws = rule_based_profile(self.catalog, h, k, items_per_keyword)
                            records.append(
                                self._record(
                                    u,
                                    h,
                                    kws,
                                    RULE,
                                    fallback_reason="LM answer had no parsable keyword (title echoes do not count)",
                                    lm=lm_name,
                                    raw=text,
                                )
                            )
                if self.path is not None:
                    append_jsonl(self.path, records)
                for r in records:
                    self.records[(r["user"], r["key"])] = r
                    self.stats[r["source"]] += 1
                self.stats["generated"] += len(records)
                bar.update(len(chunk))
        finally:
            bar.close()
            self.stats["seconds"] += time.perf_counter() - t0
        return len(items)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from padrec.progress import bar

    return bar(total, desc, unit="user", enabled=enabled, leave=False)


def profile_histories(histories: Sequence[np.ndarray], max_history: int) -> list[list[int]]:
    """The part of each history a profile (and a prompt) sees: its last ``max_history`` items."""
    return [[int(i) for i in h[-max_history:]] for h in histories]
