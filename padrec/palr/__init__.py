"""PALR (Yang et al., arXiv 2305.07622): profile → retrieve → rank with an instruction-tuned language model.

Modules (transformers/peft are imported only where a language model is used):

- :mod:`padrec.palr.prompts`: versioned prompt templates (``PROMPT_VERSION``) and item rendering.
- :mod:`padrec.palr.profile`: LM or rule-based user profiles, cached in resumable JSONL.
- :mod:`padrec.palr.retrieval`: any padrec recommender as the top-N candidate retriever.
- :mod:`padrec.palr.instructions`: instruction data from training prefixes only.
- :mod:`padrec.palr.lm`: ``load_causal_lm(spec)`` (SmolLM2 GGUF, Gemma 3 270M, local dirs), generation, scoring.
- :mod:`padrec.palr.finetune`: LoRA/full fine-tuning with Lightning, answer-only loss, resumable.
- :mod:`padrec.palr.rank`: output parsing/mapping and :class:`~padrec.palr.rank.PALRRanker` (a recommender).
- :mod:`padrec.palr.pipeline`: the stages in one run directory; :mod:`padrec.palr.cli`: ``padrec palr ...``.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "PROMPT_VERSION": "padrec.palr.prompts",
    "ItemCatalog": "padrec.palr.prompts",
    "PALRConfig": "padrec.palr.config",
    "load_palr_config": "padrec.palr.config",
    "ProfileStore": "padrec.palr.profile",
    "rule_based_profile": "padrec.palr.profile",
    "build_examples": "padrec.palr.instructions",
    "load_causal_lm": "padrec.palr.lm",
    "ModelNotFoundError": "padrec.palr.lm",
    "finetune": "padrec.palr.finetune",
    "PALRRanker": "padrec.palr.rank",
    "map_to_candidates": "padrec.palr.rank",
    "parse_generation": "padrec.palr.rank",
    "evaluate_palr": "padrec.palr.pipeline",
    "run_palr": "padrec.palr.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'padrec.palr' has no attribute {name!r}")
