"""Instruction data for PALR's two tasks, built from the training prefixes only.

Nothing here reads a validation or test target: examples, the co-occurrence graph used to fill short
targets, and the negatives of the retrieval task all come from ``split.train_sequences()`` (and
uniform random items), so the data is identical for any two splits with the same training prefixes.

Per sampled user (``user_fraction`` of the users whose training prefix is long enough, seeded):
the last ``label_len`` training items are the label and the ``max_history`` items before them the
input. A label shorter than ``n_recommend`` is filled from co-occurrence neighbours of the label
items, hop by hop up to ``fill_hops`` (marked in ``filled``). With probability ``swap_prob`` one input
item and one label item change places. *Recommend* asks for the label; *Recommend_Retrieval* shows
``train_candidates`` candidates = label + co-occurrence neighbours of the input (similar negatives)
+ uniform random items, shuffled.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from padrec.data.split import Split
from padrec.palr.config import PALRConfig
from padrec.palr.profile import ProfileStore, rule_based_profile
from padrec.palr.prompts import (
    PROMPT_VERSION,
    ItemCatalog,
    answer_text,
    profile_text,
    recommend_prompt,
    recommend_retrieval_prompt,
)
from padrec.utils import atomic_write_text

DATA_FILE = "instructions.jsonl"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Cooccurrence:
    """Top co-occurring items per item (``neighbours[i]``, 0-padded) with their counts, from training prefixes."""

    neighbours: np.ndarray  # int64 [n_items + 1, top]
    counts: np.ndarray  # int64 [n_items + 1, top]

    @classmethod
    def from_sequences(cls, offsets: np.ndarray, items: np.ndarray, n_items: int, window: int = 3, top: int = 20):
        c = n_items + 1
        user_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        keys = []
        for d in range(1, window + 1):
            same = user_of[:-d] == user_of[d:]
            a, b = items[:-d][same], items[d:][same]
            ok = a != b
            a, b = a[ok], b[ok]
            keys += [a * c + b, b * c + a]
        nbr = np.zeros((c, top), dtype=np.int64)
        cnt = np.zeros((c, top), dtype=np.int64)
        if keys and sum(len(k) for k in keys):
            uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
            src, dst = uniq // c, uniq % c
            order = np.lexsort((dst, -counts, src))
            src, dst, counts = src[order], dst[order], counts[order]
            start = np.searchsorted(src, src, side="left")
            rank = np.arange(len(src)) - start
            keep = rank < top
            nbr[src[keep], rank[keep]] = dst[keep]
            cnt[src[keep], rank[keep]] = counts[keep]
        return cls(nbr, cnt)

    def expand(
        self, seeds: Sequence[int], exclude: set[int], need: int, hops: int, frontier_cap: int = 64
    ) -> list[int]:
        """Up to ``need`` new items, hop by hop from ``seeds`` (1 hop = direct neighbours), best co-count first."""
        out: list[int] = []
        seen = set(exclude) | {int(s) for s in seeds}
        frontier = [int(s) for s in seeds]
        for _ in range(hops):
            if len(out) >= need or not frontier:
                break
            score: Counter[int] = Counter()
            for i in frontier:
                for j, n in zip(self.neighbours[i], self.counts[i], strict=True):
                    j = int(j)
                    if j and j not in seen:
                        score[j] += int(n)
            ranked = sorted(score, key=lambda j: (-score[j], j))
            out += ranked[: need - len(out)]
            seen.update(ranked)
            frontier = ranked[:frontier_cap]
        return out


def _profile(cfg: PALRConfig, catalog: ItemCatalog, store: ProfileStore | None, user: int, hist: list[int]):
    if cfg.profile == "none":
        return None
    if store is not None:
        text = store.text(user, hist)
        if text is not None:
            return text
    return profile_text(catalog, rule_based_profile(catalog, hist, cfg.profile_keywords, cfg.profile_items_per_keyword))


def sample_training_users(split: Split, cfg: PALRConfig) -> np.ndarray:
    """The seeded ``user_fraction`` of users whose training prefix holds at least ``min_input + 1`` items."""
    lengths = np.diff(split.train_offsets)
    eligible = np.flatnonzero(lengths >= cfg.min_input + 1)
    n = max(1, round(cfg.user_fraction * len(eligible))) if len(eligible) else 0
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(eligible, size=n, replace=False)) if n else eligible


def example_windows(split: Split, cfg: PALRConfig, users: np.ndarray) -> list[tuple[int, list[int], list[int]]]:
    """``(user, input, label)`` per user: the training prefix's last ``label_len`` items are the label."""
    out = []
    for u in users:
        seq = split.train_items[split.train_offsets[u] : split.train_offsets[u + 1]]
        cut = max(cfg.min_input, len(seq) - cfg.label_len)
        out.append((int(u), [int(i) for i in seq[max(0, cut - cfg.max_history) : cut]], [int(i) for i in seq[cut:]]))
    return out


def build_examples(
    split: Split, catalog: ItemCatalog, cfg: PALRConfig, profiles: ProfileStore | None = None
) -> list[dict[str, Any]]:
    """Instruction examples (dicts with ``prompt`` and ``answer`` text and the item ids behind them)."""
    rng = np.random.default_rng(cfg.seed + 1)
    graph = Cooccurrence.from_sequences(
        split.train_offsets, split.train_items, split.n_items, cfg.cooc_window, cfg.cooc_top
    )
    ext = catalog.external_ids
    examples = []
    for u, inp, label in example_windows(split, cfg, sample_training_users(split, cfg)):
        inp, label = list(inp), list(label)
        if cfg.swap_prob > 0 and inp and label and rng.random() < cfg.swap_prob:
            a, b = int(rng.integers(len(inp))), int(rng.integers(len(label)))
            inp[a], label[b] = label[b], inp[a]
        filled = [False] * len(label)
        if len(label) < cfg.n_recommend and cfg.fill_hops > 0:
            extra = graph.expand(label, set(inp), cfg.n_recommend - len(label), cfg.fill_hops)
            label += extra
            filled += [True] * len(extra)
        answer = label[: cfg.n_recommend]
        profile = _profile(cfg, catalog, profiles, u, inp)
        base = {
            "user": u,
            "input": [ext[i] for i in inp],
            "label": [ext[i] for i in answer],
            "filled": filled[: cfg.n_recommend],
            "prompt_version": PROMPT_VERSION,
        }
        if "recommend" in cfg.tasks:
            examples.append(
                {
                    **base,
                    "task": "recommend",
                    "candidates": None,
                    "prompt": recommend_prompt(catalog, inp, profile, len(answer)),
                    "answer": answer_text(catalog, answer),
                }
            )
        if "recommend_retrieval" in cfg.tasks:
            cands = _training_candidates(graph, rng, inp, answer, cfg.train_candidates, split.n_items, cfg.fill_hops)
            examples.append(
                {
                    **base,
                    "task": "recommend_retrieval",
                    "candidates": [ext[i] for i in cands],
                    "prompt": recommend_retrieval_prompt(catalog, inp, profile, cands, len(answer)),
                    "answer": answer_text(catalog, answer),
                }
            )
    return examples


def _training_candidates(
    graph: Cooccurrence,
    rng: np.random.Generator,
    inp: list[int],
    answer: list[int],
    size: int,
    n_items: int,
    hops: int,
) -> list[int]:
    """The answer + similar negatives (neighbours of the input) + uniform random items, shuffled."""
    size = max(size, len(answer))
    taken = set(inp) | set(answer)
    negs = graph.expand(inp[-5:], taken, (size - len(answer) + 1) // 2, max(hops, 1))
    taken.update(negs)
    budget = size - len(answer) - len(negs)
    tries = 0
    while budget > 0 and tries < 20 * size and len(taken) < n_items:
        j = int(rng.integers(1, n_items + 1))
        tries += 1
        if j not in taken:
            taken.add(j)
            negs.append(j)
            budget -= 1
    cands = list(answer) + negs
    rng.shuffle(cands)
    return cands


def build_instruction_data(
    split: Split, catalog: ItemCatalog, cfg: PALRConfig, out_dir: str | Path, profiles: ProfileStore | None = None
) -> dict[str, Any]:
    """Write ``out_dir/instructions.jsonl`` and ``meta.json`` (the stage is done once meta.json exists)."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    examples = build_examples(split, catalog, cfg, profiles)
    atomic_write_text(out_dir / DATA_FILE, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    filled = sum(sum(e["filled"]) for e in examples)
    slots = sum(len(e["filled"]) for e in examples)
    meta = {
        "prompt_version": PROMPT_VERSION,
        "dataset": split.dataset.name,
        "dataset_shape": [split.dataset.n_users, split.n_items, split.dataset.n_interactions],
        "examples": len(examples),
        "users": len({e["user"] for e in examples}),
        "per_task": dict(Counter(e["task"] for e in examples)),
        "filled_share": filled / max(slots, 1),
        "seconds": round(time.perf_counter() - t0, 3),
        "config": cfg.model_dump(mode="json"),
    }
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2))
    return meta


def read_examples(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / DATA_FILE
    if not path.exists():
        raise FileNotFoundError(f"no instruction data at {path}: run `padrec palr build-data` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
