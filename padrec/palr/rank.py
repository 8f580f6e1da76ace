"""Stage 3 of PALR: an LM ranks the retriever's candidates, as a padrec-style recommender.

Three ranking modes:

- ``generation``: the model answers the *Recommend_Retrieval* prompt; each answer line is mapped back
  to a candidate (exact match on a normalised title — case, punctuation, accents, "Title, The" —
  then fuzzy match above ``fuzzy_threshold``). A line that maps to no candidate is a hallucination:
  counted and dropped (even when it names a real catalogue item); repeats are dropped too. The list is
  then filled from the retriever's order.
- ``likelihood``: every candidate title is scored by its mean (or summed) token log-likelihood as
  the first answer line after the prompt; no hallucination is possible.
- ``verbalizer`` (padrec's, a deviation from the paper, after LlamaRec's verbalizer ranker): the candidates
  are listed with one-token labels (``[A] title``), and ONE forward pass per batch of users scores every
  candidate by the log-probability of its label as the answer's first token. No generation, no per-candidate
  passes, no hallucination; the ranking is a single next-token distribution.

:class:`PALRRanker` returns ``[B, n_items + 1]`` scores so the standard :class:`~padrec.eval.Evaluator`
computes full-ranking metrics: the ranked candidates get ``BIG + (N - position)``, every other item
its retriever score shifted below all candidates (``score - row max - 1``). ``stats`` counts how many
of the top-``n_recommend`` slots came from the model and how many from the retriever fallback.

With a :class:`RankingCache` (``ranker.cache``; :func:`padrec.palr.pipeline.evaluate_palr` gives one per run
directory, LM and options) every user's model order is appended to a JSONL file as soon as it is made, keyed
by the exact prompt contents; a rerun after a kill takes finished users from the file and only asks the LM
about the rest, with the same scores, counts and metrics as an uninterrupted run. Likelihood and verbalizer records
also keep the candidates (retriever order), the LM's score of each (``lm_scores``) and the retriever's
(``retriever_scores``); ``ranker.scores`` holds them per user for :mod:`padrec.palr.fusion`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from padrec.data.split import Split
from padrec.models.base import Recommender
from padrec.palr.config import PALRConfig
from padrec.palr.profile import ProfileStore, append_jsonl, read_jsonl, rule_based_profile
from padrec.palr.prompts import ANSWER_PREFIX, ItemCatalog, profile_text, recommend_retrieval_prompt
from padrec.palr.retrieval import load_retriever, retriever_scores, top_candidates

BIG = 1.0e4
_ARTICLE_LAST = re.compile(
    r"^(?P<rest>.+?),\s*(?P<art>the|a|an|les|la|le|l'|il|el|los|las|das|der|die|den|det)\s*(?P<tail>\(.*\))?\s*$",
    re.IGNORECASE,
)
_YEAR = re.compile(r"\(\s*\d{4}\s*\)")
_LIST_MARK = re.compile(r"^\s*(?:\d{1,3}\s*[.):\-]|[-*•])\s*")


def normalize_title(text: str) -> str:
    """Case-, accent- and punctuation-free form; ``"Empire Strikes Back, The (1980)"`` → ``"the empire ... 1980"``."""
    t = unicodedata.normalize("NFKD", str(text))
    t = "".join(ch for ch in t if not unicodedata.combining(ch)).strip().strip("\"'`*_").strip()
    m = _ARTICLE_LAST.match(t)
    if m:
        t = f"{m.group('art')} {m.group('rest')} {m.group('tail') or ''}"
    t = re.sub(r"[^\w\s]", " ", t.casefold())
    return re.sub(r"\s+", " ", t).strip()


def parse_generation(text: str, limit: int | None = None) -> list[str]:
    """Answer lines as item strings: list markers and quotes stripped; when some lines are list
    entries (``1.``, ``-``), only those count (a chatty preamble is not an answer)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    marked = [ln for ln in lines if _LIST_MARK.match(ln)]
    out = []
    for ln in marked or lines:
        item = _LIST_MARK.sub("", ln, count=1).strip().strip("\"'`*_").strip()
        if item:
            out.append(item)
    return out[:limit] if limit is not None else out


def _make_ratio() -> Any:
    """rapidfuzz's ratio when installed, else difflib's (same 0..1 scale, slower)."""
    try:
        from rapidfuzz import fuzz

        return lambda a, b: float(fuzz.ratio(a, b)) / 100.0
    except ImportError:
        from difflib import SequenceMatcher

        return lambda a, b: SequenceMatcher(None, a, b, autojunk=False).ratio()


_RATIO: Any = None


def _ratio(a: str, b: str) -> float:
    global _RATIO
    if _RATIO is None:
        _RATIO = _make_ratio()
    return _RATIO(a, b)


@dataclass
class Mapping:
    """Outcome of mapping one answer to candidates."""

    items: list[int] = field(default_factory=list)
    hallucinated: list[str] = field(default_factory=list)
    duplicates: int = 0
    fuzzy: int = 0


def map_to_candidates(
    outputs: Sequence[str], candidates: Sequence[int], catalog: ItemCatalog, threshold: float = 0.85
) -> Mapping:
    """Map answer strings to candidate ids: exact (normalised) match, then fuzzy; the rest are hallucinations."""
    keys: list[tuple[str, int]] = []
    for c in candidates:
        full = normalize_title(catalog.render(c))
        keys.append((full, int(c)))
        bare = normalize_title(_YEAR.sub("", catalog.render(c)))
        if bare != full:
            keys.append((bare, int(c)))
        keys.append((normalize_title(catalog.external_ids[int(c)]), int(c)))
    res = Mapping()
    picked: set[int] = set()
    for out in outputs:
        n = normalize_title(out)
        if not n:
            continue
        exact = [c for k, c in keys if k == n]
        hit: int | None = next((c for c in exact if c not in picked), exact[0] if exact else None)
        if hit is None:
            best, score = None, 0.0
            for k, c in keys:
                r = _ratio(n, k)
                if r > score or (r == score and best in picked and c not in picked):
                    best, score = c, r
            if best is not None and score >= threshold:
                hit = best
                res.fuzzy += 1
        if hit is None:
            res.hallucinated.append(out)
        elif hit in picked:
            res.duplicates += 1
        else:
            picked.add(hit)
            res.items.append(hit)
    return res


def ranking_key(user: int, history: Sequence[int], profile: str | None, candidates: Sequence[int]) -> str:
    """Key of one user's ranking: everything the prompt is made of (history, profile, candidates in order)."""
    text = json.dumps([int(user), [int(i) for i in history], profile, [int(c) for c in candidates]])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class RankingCache:
    """Per-user ranking results of one LM + options, in an append-only JSONL file (see ``profile.append_jsonl``:
    each batch lands whole, a torn last line from a kill is dropped on load). ``path=None`` keeps nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.records: dict[tuple[int, str], dict] = {}
        if self.path is not None:
            for r in read_jsonl(self.path):
                self.records[(int(r["user"]), str(r["key"]))] = r

    def __len__(self) -> int:
        return len(self.records)

    def get(self, user: int, key: str | None) -> dict | None:
        return self.records.get((int(user), str(key)))

    def add(self, records: Sequence[dict]) -> None:
        if self.path is not None:
            append_jsonl(self.path, records)
        for r in records:
            self.records[(int(r["user"]), str(r["key"]))] = r


def place_on_top(scores: torch.Tensor, lists: Sequence[Sequence[int]], orders: Sequence[Sequence[int]]) -> torch.Tensor:
    """Full-ranking scores ``[B, n_items + 1]`` from the retriever's ``scores``: each row's ``orders`` first, then the
    rest of its candidate ``lists`` in retriever order, all above every other item (``BIG + (N - position)``); the
    other items keep their retriever order below them (``score - row max - 1``)."""
    finite = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -torch.inf))
    out = scores - finite.max(dim=1, keepdim=True).values.clamp_min(-1e30) - 1.0
    for r, (retr_order, model_order) in enumerate(zip(lists, orders, strict=True)):
        chosen = set(model_order)
        final = list(model_order) + [c for c in retr_order if c not in chosen]
        idx = torch.as_tensor(final, dtype=torch.long)
        out[r, idx] = BIG + torch.arange(len(final), 0, -1, dtype=out.dtype)
    return out


class PALRRanker(Recommender):
    """PALR as a recommender: retriever top-N → LM ranking (likelihood or generation) → full scores.

    ``score(histories, users=...)`` needs user ids (profiles are per user), which the evaluator passes
    because ``uses_user_ids`` is set. ``lm=None`` ranks by the retriever alone (a pipeline check).
    ``forced`` (user → target) puts the target among the candidates (the upper-bound report).
    """

    name = "palr"
    uses_user_ids = True

    def __init__(
        self,
        lm: Any = None,
        retriever: Recommender | None = None,
        cfg: PALRConfig | None = None,
        catalog: ItemCatalog | None = None,
        profiles: ProfileStore | None = None,
        label: str = "palr",
    ) -> None:
        self.cfg = cfg or PALRConfig()
        super().__init__(**self.cfg.model_dump(mode="json"))
        self.lm, self.retriever, self.catalog, self.profiles = lm, retriever, catalog, profiles
        self.label = label
        self.forced: dict[int, int] = {}
        self.progress: Any = None  # an optional tqdm bar, advanced by users
        self.cache: RankingCache | None = None  # per-user results of earlier (interrupted) runs, resumed
        self.stats: dict[str, float] = {}
        self.examples: list[dict[str, Any]] = []  # a few prompts/answers for inspection
        # user -> {"candidates", "lm", "retriever"}: per-candidate scores of every user ranked (likelihood/verbalizer)
        self.scores: dict[int, dict[str, list]] = {}
        # a cached record without scores (written before they were kept) is ranked again instead of resumed
        self.need_scores = False
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = dict.fromkeys(
            (
                "users",
                "slots",
                "model_items",
                "fallback_items",
                "outputs",
                "hallucinations",
                "duplicates",
                "fuzzy_matches",
                "rank_seconds",
                "profile_seconds",
                "resumed_users",
                "rescored_users",
            ),
            0,
        )

    def fit(self, split: Split) -> PALRRanker:
        """Remember the catalogue; load/fit the retriever named in the config when none was given."""
        self._remember_items(split)
        if self.catalog is None:
            self.catalog = ItemCatalog.from_dataset(split.dataset, self.cfg.item_format)
        if self.retriever is None:
            self.retriever = load_retriever(self.cfg.retriever, split)
        return self

    # -- scoring --------------------------------------------------------------------------------
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        cfg = self.cfg
        if users is None:
            users = np.full(len(histories), -1, dtype=np.int64)
        s = retriever_scores(self.retriever, histories, users)
        cands = top_candidates(s, histories, cfg.n_candidates)
        lists = [self._candidate_list(int(u), row) for u, row in zip(users, cands, strict=True)]
        prompt_hist = [[int(i) for i in h[-cfg.max_history :]] for h in histories]
        profiles = self._profiles(users, prompt_hist)
        retr = [s[r, torch.as_tensor(c, dtype=torch.long)].tolist() for r, c in enumerate(lists)]
        picks = self._rank(users, prompt_hist, profiles, lists, retr)
        for retr_order, model_order in zip(lists, picks, strict=True):
            chosen = set(model_order)
            top = min(cfg.n_recommend, len(model_order) + sum(c not in chosen for c in retr_order))
            from_model = min(len(model_order), top)
            self.stats["model_items"] += from_model
            self.stats["fallback_items"] += top - from_model
            self.stats["slots"] += top
        self.stats["users"] += len(histories)
        return place_on_top(s, lists, picks)

    def _rank(
        self,
        users: np.ndarray,
        histories: list[list[int]],
        profiles: list[str | None],
        lists: list[list[int]],
        retr: list[list[float]] | None = None,
    ) -> list[list[int]]:
        """The model's order of each user's candidates: from the ranking cache when this user's exact prompt was
        ranked before, else from the LM; each newly ranked user is appended to the cache as soon as it is done
        (per user for likelihood ranking, per batch otherwise), so a killed evaluation resumes where it stopped.
        ``retr``: the retriever's scores of ``lists``, kept with the LM's scores (``self.scores``, the cache)."""
        cfg = self.cfg
        picks: list[list[int] | None] = [None] * len(lists)
        keys: list[str | None] = [None] * len(lists)
        if self.lm is None:
            self._tick(len(lists))
            return [[] for _ in lists]
        if self.cache is not None:
            for r, (u, h, p, c) in enumerate(zip(users, histories, profiles, lists, strict=True)):
                keys[r] = ranking_key(int(u), h, p, c)
                rec = self.cache.get(int(u), keys[r])
                if rec is not None and self.need_scores and rec.get("lm_scores") is None:
                    rec = None  # ranked before scores were kept: rank it again to get them
                    self.stats["rescored_users"] += 1
                if rec is not None:
                    picks[r] = [int(i) for i in rec["items"]]
                    self._keep_scores(int(u), c, rec.get("lm_scores"), retr[r] if retr is not None else None)
                    self._count(rec.get("stats", {}), float(rec.get("seconds", 0.0)), rec.get("example"))
                    self.stats["resumed_users"] += 1
                    self._tick(1)
        todo = [r for r in range(len(lists)) if picks[r] is None]

        def done(rows: list[int], results: list[tuple[list[int], dict]], seconds: float) -> None:
            recs = []
            for r, (order, info) in zip(rows, results, strict=True):
                picks[r] = order
                example = info.pop("example", None)
                lm_scores = info.pop("scores", None)
                self._count(info, seconds / len(rows), example)
                self._keep_scores(int(users[r]), lists[r], lm_scores, retr[r] if retr is not None else None)
                if self.cache is not None:
                    kept: dict[str, Any] = {}
                    if lm_scores is not None:  # for fusion (padrec.palr.fusion), aligned with the candidates
                        kept = {"candidates": lists[r], "lm_scores": lm_scores}
                        kept.update({"retriever_scores": retr[r]} if retr is not None else {})
                    recs.append(
                        {"user": int(users[r]), "key": keys[r], "items": order, "stats": info,
                         "seconds": seconds / len(rows), **kept, **({"example": example} if example else {})}
                    )  # fmt: skip
            if self.cache is not None:
                self.cache.add(recs)
            self._tick(len(rows))

        if cfg.mode == "likelihood":
            for r in todo:
                t0 = time.perf_counter()
                res = self._rank_likelihood(histories[r], profiles[r], lists[r])
                done([r], [res], time.perf_counter() - t0)
        elif todo:
            rank = self._rank_verbalizer if cfg.mode == "verbalizer" else self._rank_generation
            t0 = time.perf_counter()
            res = rank([histories[r] for r in todo], [profiles[r] for r in todo], [lists[r] for r in todo])
            done(todo, res, time.perf_counter() - t0)
        return [p if p is not None else [] for p in picks]

    def _keep_scores(
        self, user: int, cands: list[int], lm_scores: list[float] | None, retr: list[float] | None
    ) -> None:
        if lm_scores is not None and retr is not None:
            self.scores[user] = {"candidates": list(cands), "lm": list(lm_scores), "retriever": list(retr)}

    def _count(self, info: dict[str, Any], seconds: float, example: dict | None) -> None:
        for k in ("outputs", "hallucinations", "duplicates", "fuzzy_matches"):
            self.stats[k] += int(info.get(k, 0))
        self.stats["rank_seconds"] += seconds
        if example is not None and len(self.examples) < 3:
            self.examples.append(example)

    def _tick(self, n: int) -> None:
        if self.progress is not None:
            self.progress.update(n)

    def _candidate_list(self, user: int, row: np.ndarray) -> list[int]:
        """Candidates in retriever order (the fallback order); a forced target is inserted at a seeded position."""
        cands = [int(c) for c in row]
        target = self.forced.get(user)
        if target is not None and target not in cands:
            rng = np.random.default_rng([self.cfg.users_seed, user])
            cands = cands[:-1] if len(cands) >= self.cfg.n_candidates else cands
            cands.insert(int(rng.integers(len(cands) + 1)), int(target))
        return cands

    def _prompt_order(self, user_key: Sequence[int], cands: list[int]) -> list[int]:
        if self.cfg.candidate_order == "retriever":
            return cands
        rng = np.random.default_rng([self.cfg.seed, *map(int, user_key[-3:])])
        return [cands[i] for i in rng.permutation(len(cands))]

    def _profiles(self, users: np.ndarray, histories: list[list[int]]) -> list[str | None]:
        cfg = self.cfg
        if cfg.profile == "none":
            return [None] * len(histories)
        t0 = time.perf_counter()
        out: list[str | None] = []
        if self.profiles is not None:
            if cfg.profile == "lm" and self.lm is not None:
                from padrec.palr.lm import generate

                self.profiles.ensure(
                    users,
                    histories,
                    generate=lambda ps: generate(self.lm, ps, cfg.profile_max_new_tokens, cfg.profile_batch_size),
                    lm_name=getattr(self.lm, "spec", None),
                    k=cfg.profile_keywords,
                    items_per_keyword=cfg.profile_items_per_keyword,
                    batch_size=cfg.profile_batch_size,
                    progress=False,
                )
            for u, h in zip(users, histories, strict=True):
                out.append(self.profiles.text(int(u), h))
        else:
            out = [None] * len(histories)
        for i, h in enumerate(histories):
            if out[i] is None:
                kws = rule_based_profile(self.catalog, h, cfg.profile_keywords, cfg.profile_items_per_keyword)
                out[i] = profile_text(self.catalog, kws)
        self.stats["profile_seconds"] += time.perf_counter() - t0
        return out

    def prompt(self, history: list[int], profile: str | None, cands: list[int]) -> str:
        shown = self._prompt_order(history, cands)
        return recommend_retrieval_prompt(self.catalog, history, profile, shown, self.cfg.n_recommend)

    def _rank_likelihood(
        self, history: list[int], profile: str | None, cands: list[int]
    ) -> tuple[list[int], dict[str, Any]]:
        from padrec.palr.lm import continuation_logprobs

        prefix = self.lm.wrap(self.prompt(history, profile, cands)) + ANSWER_PREFIX
        conts = [f" {self.catalog.render(c)}\n" for c in cands]
        ll = continuation_logprobs(self.lm, prefix, conts, self.cfg.candidate_batch, self.cfg.length_norm)
        order = np.lexsort((np.arange(len(cands)), -ll))  # ties keep the retriever's order
        info: dict[str, Any] = {"scores": [float(x) for x in ll]}
        if len(self.examples) < 3:
            info["example"] = {"prompt": prefix, "top": [self.catalog.render(cands[i]) for i in order[:5]]}
        return [cands[int(i)] for i in order], info

    def _rank_verbalizer(
        self, histories: list[list[int]], profiles: list[str | None], lists: list[list[int]]
    ) -> list[tuple[list[int], dict[str, Any]]]:
        from padrec.palr.lm import label_token_ids, next_token_logits
        from padrec.palr.prompts import LABELS, VERBALIZER_PREFIX, labelled_retrieval_prompt

        width = max((len(c) for c in lists), default=0)
        if getattr(self, "_label_ids", None) is None or len(self._label_ids) < width:
            self._label_ids = label_token_ids(self.lm, LABELS[: max(width, 1)], VERBALIZER_PREFIX)
        shown = [self._prompt_order(h, c) for h, c in zip(histories, lists, strict=True)]
        texts = [
            self.lm.wrap(labelled_retrieval_prompt(self.catalog, h, p, s)) + VERBALIZER_PREFIX
            for h, p, s in zip(histories, profiles, shown, strict=True)
        ]
        lp = next_token_logits(self.lm, texts, self._label_ids[:width], self.cfg.verbalizer_batch)
        out = []
        for r, (cands, order_shown) in enumerate(zip(lists, shown, strict=True)):
            score = {c: lp[r, k] for k, c in enumerate(order_shown)}
            rank = np.lexsort((np.arange(len(cands)), -np.asarray([score[c] for c in cands])))  # ties: retriever
            order = [cands[int(i)] for i in rank]
            info: dict[str, Any] = {"scores": [float(score[c]) for c in cands]}
            if len(self.examples) + r < 3:
                info["example"] = {"prompt": texts[r], "top": [self.catalog.render(c) for c in order[:5]]}
            out.append((order, info))
        return out

    def _rank_generation(
        self, histories: list[list[int]], profiles: list[str | None], lists: list[list[int]]
    ) -> list[tuple[list[int], dict[str, Any]]]:
        from padrec.palr.lm import generate

        cfg = self.cfg
        prompts = [self.prompt(h, p, c) for h, p, c in zip(histories, profiles, lists, strict=True)]
        answers = generate(self.lm, prompts, cfg.gen_max_new_tokens, cfg.gen_batch_size)
        out = []
        for r, (prompt, answer, cands) in enumerate(zip(prompts, answers, lists, strict=True)):
            outputs = parse_generation(answer, cfg.n_recommend)
            m = map_to_candidates(outputs, cands, self.catalog, cfg.fuzzy_threshold)
            info: dict[str, Any] = {
                "outputs": len(outputs),
                "hallucinations": len(m.hallucinated),
                "duplicates": m.duplicates,
                "fuzzy_matches": m.fuzzy,
            }
            if len(self.examples) + r < 3:
                info["example"] = {"prompt": prompt, "answer": answer, "hallucinated": m.hallucinated[:5]}
            out.append((m.items[: cfg.n_recommend], info))
        return out

    def summary(self) -> dict[str, float]:
        """Hallucination rate (share of answer lines outside the candidates), fallback share, speed."""
        st = self.stats
        secs = st["rank_seconds"] + st["profile_seconds"]
        return {
            "hallucination_rate": st["hallucinations"] / st["outputs"] if st["outputs"] else 0.0,
            "fallback_share": st["fallback_items"] / st["slots"] if st["slots"] else 0.0,
            "model_items": int(st["model_items"]),
            "fallback_items": int(st["fallback_items"]),
            "outputs": int(st["outputs"]),
            "hallucinations": int(st["hallucinations"]),
            "duplicates": int(st["duplicates"]),
            "fuzzy_matches": int(st["fuzzy_matches"]),
            "users": int(st["users"]),
            "resumed_users": int(st["resumed_users"]),
            "rescored_users": int(st["rescored_users"]),  # cached without scores, ranked again for fusion
            "rank_seconds": float(st["rank_seconds"]),
            "profile_seconds": float(st["profile_seconds"]),
            "users_per_second": st["users"] / secs if secs > 0 else float("nan"),
        }
