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
+ uniform random items, shuffled (``train_negatives=retriever``: the retriever's top items for the training
prefix before the next item instead, as at inference; with ``train_order=retriever`` listed in the retriever's
order, and only for users whose next item is among them). With ``mode=verbalizer`` the *Recommend_Retrieval*
examples use the verbalizer's format instead (:func:`retrieval_format`): candidates labelled ``[A] title`` (the
next item + negatives, the later label items left out), ``answer_prefix`` ``"["`` and the next item's label as
the answer.

``meta.json`` records what the set was built from (:func:`instruction_identity`: dataset, ``n_items``, its
shape, :func:`data_fingerprint`, prompt version, ranking format, negatives); :func:`stale_reason` says why a set
does not fit (a set from before fingerprints is compared by the dataset's shape).
"""

from __future__ import annotations

import hashlib
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
    LABELS,
    PROMPT_VERSION,
    VERBALIZER_PREFIX,
    ItemCatalog,
    answer_text,
    labelled_retrieval_prompt,
    profile_text,
    recommend_prompt,
    recommend_retrieval_prompt,
)
from padrec.progress import bar
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


def _label_cut(split: Split, cfg: PALRConfig, user: int) -> tuple[np.ndarray, int]:
    """The user's training prefix and where its label window starts (its last ``label_len`` items)."""
    seq = split.train_items[split.train_offsets[user] : split.train_offsets[user + 1]]
    return seq, max(cfg.min_input, len(seq) - cfg.label_len)


def example_windows(split: Split, cfg: PALRConfig, users: np.ndarray) -> list[tuple[int, list[int], list[int]]]:
    """``(user, input, label)`` per user: the training prefix's last ``label_len`` items are the label."""
    out = []
    for u in users:
        seq, cut = _label_cut(split, cfg, u)
        out.append((int(u), [int(i) for i in seq[max(0, cut - cfg.max_history) : cut]], [int(i) for i in seq[cut:]]))
    return out


def build_examples(
    split: Split, catalog: ItemCatalog, cfg: PALRConfig, profiles: ProfileStore | None = None, retriever: Any = None
) -> list[dict[str, Any]]:
    """Instruction examples (dicts with ``prompt`` and ``answer`` text and the item ids behind them);
    ``retriever`` (a fitted recommender) is needed with ``train_negatives=retriever``."""
    rng = np.random.default_rng(cfg.seed + 1)
    graph = Cooccurrence.from_sequences(
        split.train_offsets, split.train_items, split.n_items, cfg.cooc_window, cfg.cooc_top
    )
    ext = catalog.external_ids
    examples = []
    windows = example_windows(split, cfg, sample_training_users(split, cfg))
    ranked = None
    if uses_retriever_negatives(cfg):
        if retriever is None:
            raise ValueError("train_negatives=retriever needs the retriever (build_examples(..., retriever=))")
        ranked = retriever_ranking(split, cfg, retriever, [u for u, _, _ in windows])
    for k, (u, inp, label) in enumerate(
        bar(None, "instruction data", unit="user", enabled=cfg.progress, iterable=windows)
    ):
        inp, label = list(inp), list(label)
        mine = None if ranked is None else ranked[k]  # the retriever's list for this prefix, if it gives negatives
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
        if "recommend_retrieval" in cfg.tasks and retrieval_format(cfg) == "labelled":
            # the verbalizer's task: candidates listed as "[A] title", the answer is the next item's label, the
            # one token the verbalizer ranker reads after "["; the later label items are kept out of the candidates
            target = answer[0]
            size = min(cfg.train_candidates, len(LABELS))
            ordered = cfg.train_order == "retriever"
            cands = _training_candidates(
                graph, rng, inp, [target], size, split.n_items, cfg.fill_hops, answer, mine, ordered
            )
            if cands is not None:  # None: train_order=retriever and the retriever did not offer the next item
                examples.append(
                    {
                        **base,
                        "task": "recommend_retrieval",
                        "format": "labelled",
                        "candidates": [ext[i] for i in cands],
                        "target": ext[target],
                        "prompt": labelled_retrieval_prompt(catalog, inp, profile, cands),
                        "answer_prefix": VERBALIZER_PREFIX,
                        "answer": LABELS[cands.index(target)],
                    }
                )
        elif "recommend_retrieval" in cfg.tasks:
            cands = _training_candidates(
                graph, rng, inp, answer, cfg.train_candidates, split.n_items, cfg.fill_hops, ranked=mine
            )
            assert cands is not None  # only the ordered (verbalizer) examples can be left out
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


def retriever_ranking(
    split: Split, cfg: PALRConfig, retriever: Any, users: Sequence[int], batch_size: int = 256
) -> list[np.ndarray]:
    """Per user, the retriever's best items (best first, the prefix masked) for the training prefix before the
    label window: what it would offer as candidates right before the example's next item. Enough are kept to
    fill ``train_candidates`` after the label items and the (possibly swapped) input are taken out."""
    from padrec.palr.retrieval import retriever_scores, top_candidates

    prefixes = []
    for u in users:
        seq, cut = _label_cut(split, cfg, u)
        prefixes.append(np.asarray(seq[:cut], dtype=np.int64))
    n = cfg.train_candidates + cfg.label_len + cfg.max_history
    out: list[np.ndarray] = []
    for lo in range(0, len(prefixes), batch_size):
        hist = prefixes[lo : lo + batch_size]
        users_ = np.asarray(users[lo : lo + batch_size], dtype=np.int64)
        out.extend(top_candidates(retriever_scores(retriever, hist, users_), hist, n))
    return out


def _training_candidates(
    graph: Cooccurrence,
    rng: np.random.Generator,
    inp: list[int],
    answer: list[int],
    size: int,
    n_items: int,
    hops: int,
    exclude: Sequence[int] = (),
    ranked: np.ndarray | None = None,
    ordered: bool = False,
) -> list[int] | None:
    """The answer + negatives, shuffled (never an input or ``exclude`` item). Negatives: similar items
    (neighbours of the input) + uniform random items, or with ``ranked`` (the retriever's list for the prefix,
    best first) its best other items, so the model must tell the next item from the ones the retriever ranks
    next to it, not from where it stands. ``ordered``: the retriever's top ``size`` items as it ranks them, the
    answer (one item) where the retriever put it; None when it is not among them."""
    size = max(size, len(answer))
    taken = set(inp) | set(answer) | set(exclude)
    if ranked is not None and ordered:
        top = [int(i) for i in ranked if int(i) not in taken or int(i) == answer[0]][:size]
        return top if answer[0] in top else None
    if ranked is not None:
        cands = list(answer) + [int(i) for i in ranked if int(i) not in taken][: size - len(answer)]
        rng.shuffle(cands)
        return cands
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
    split: Split,
    catalog: ItemCatalog,
    cfg: PALRConfig,
    out_dir: str | Path,
    profiles: ProfileStore | None = None,
    retriever: Any = None,
) -> dict[str, Any]:
    """Write ``out_dir/instructions.jsonl`` and ``meta.json`` (the stage is done once meta.json exists)."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    examples = build_examples(split, catalog, cfg, profiles, retriever)
    atomic_write_text(out_dir / DATA_FILE, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    filled = sum(sum(e["filled"]) for e in examples)
    slots = sum(len(e["filled"]) for e in examples)
    meta = {
        **instruction_identity(split, catalog, cfg),
        "examples": len(examples),
        "users": len({e["user"] for e in examples}),
        "per_task": dict(Counter(e["task"] for e in examples)),
        "filled_share": filled / max(slots, 1),
        "seconds": round(time.perf_counter() - t0, 3),
        "config": cfg.model_dump(mode="json"),
    }
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2))
    return meta


def retrieval_format(cfg: PALRConfig) -> str:
    """How the ranking task's examples are written: ``labelled`` (``[A] title`` candidates, the answer is one
    label: what the verbalizer ranker reads) for ``mode=verbalizer``, else ``titles`` (a numbered title list)."""
    return "labelled" if cfg.mode == "verbalizer" else "titles"


def data_fingerprint(split: Split, catalog: ItemCatalog) -> str:
    """Digest of everything instruction data is made from: the training prefixes, the item ids and their text."""
    h = hashlib.sha256()
    h.update(f"{split.n_items}|{len(split.train_offsets)}|".encode())
    for arr in (split.train_offsets, split.train_items):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    for ext, text, attrs in zip(catalog.external_ids, catalog.texts, catalog.attributes, strict=True):
        h.update(f"{ext}\0{text}\0{'|'.join(attrs)}\0".encode())
    return h.hexdigest()[:16]


def instruction_identity(split: Split, catalog: ItemCatalog, cfg: PALRConfig) -> dict[str, Any]:
    """What an instruction set was built from, recorded in its ``meta.json`` and compared on reuse."""
    return {
        "prompt_version": PROMPT_VERSION,
        "dataset": split.dataset.name,
        "n_items": int(split.n_items),
        "dataset_shape": [int(split.dataset.n_users), int(split.n_items), int(split.dataset.n_interactions)],
        "data_fingerprint": data_fingerprint(split, catalog),
        "retrieval_format": retrieval_format(cfg),
        "negatives": negatives_source(cfg),
        "train_order": cfg.train_order,
    }


def uses_retriever_negatives(cfg: PALRConfig) -> bool:
    """Whether the instruction data needs the retriever: ranking examples with ``train_negatives=retriever``."""
    return cfg.train_negatives == "retriever" and "recommend_retrieval" in cfg.tasks


def negatives_source(cfg: PALRConfig) -> str:
    """Where the ranking examples' negatives came from: ``cooccurrence``, or ``retriever:<its run or name>``."""
    if not uses_retriever_negatives(cfg):
        return "cooccurrence"
    spec = cfg.retriever
    return f"retriever:{Path(spec).resolve() if Path(spec).exists() else spec}"


def stale_reason(meta: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why instruction data with ``meta`` does not fit the data/options ``now`` (an :func:`instruction_identity`)."""
    if meta.get("dataset") != now["dataset"] or meta.get("n_items", now["n_items"]) != now["n_items"]:
        shape = meta.get("dataset_shape") or [None, meta.get("n_items")]
        n = meta.get("n_items", shape[1] if len(shape) > 1 else None)
        had = f" ({n:,} items)" if isinstance(n, int) else ""
        return f"was built for dataset {meta.get('dataset')!r}{had}, not {now['dataset']!r} ({now['n_items']:,} items)"
    if meta.get("prompt_version") != now["prompt_version"]:
        return f"uses prompt templates {meta.get('prompt_version')!r}, not the current {now['prompt_version']!r}"
    if "data_fingerprint" in meta and meta["data_fingerprint"] != now["data_fingerprint"]:
        return (
            f"is older than the data: dataset {now['dataset']!r} changed since it was built "
            f"(data fingerprint {meta['data_fingerprint']} then, {now['data_fingerprint']} now)"
        )
    if "data_fingerprint" not in meta:  # built by an older padrec: only the data's shape can be compared
        shape = meta.get("dataset_shape")
        if not isinstance(shape, list) or [int(x) for x in shape if isinstance(x, int | float)] != now["dataset_shape"]:
            was = "unknown" if not isinstance(shape, list) else "/".join(map(str, shape))
            return (
                f"is older than the data: dataset {now['dataset']!r} changed since it was built "
                f"(users/items/interactions {was} then, {'/'.join(map(str, now['dataset_shape']))} now)"
            )
    had = meta.get("negatives", "cooccurrence")
    if had != now.get("negatives", "cooccurrence"):
        return f"takes its ranking negatives from {had}, but this run asks for {now['negatives']} (train_negatives)"
    order = meta.get("train_order", "shuffled")
    if order != now.get("train_order", "shuffled"):
        return f"lists its ranking candidates with train_order={order}, but this run asks for {now['train_order']}"
    was = meta.get("retrieval_format", "titles")
    if was != now["retrieval_format"]:
        modes = {"labelled": "mode=verbalizer", "titles": "mode=likelihood or generation"}
        return (
            f"holds {was}-format ranking examples (for {modes[was]}), but {modes[now['retrieval_format']]} "
            f"trains {now['retrieval_format']}-format ones"
        )
    return None


def read_examples(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / DATA_FILE
    if not path.exists():
        raise FileNotFoundError(f"no instruction data at {path}: run `padrec palr build-data` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
