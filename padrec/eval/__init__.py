"""Evaluation protocol: full-ranking and sampled metrics, overall and per group, as named results.

``Evaluator(split, Protocol()).run(model)`` is the one way numbers are produced; every
:class:`Results` carries its protocol name (``full-loo``, ``sampled100-uniform-loo``...).
"""

from padrec.eval.evaluator import Evaluator
from padrec.eval.metrics import metrics_from_ranks, sampled_ranks, target_ranks
from padrec.eval.negatives import draw_negatives, load_or_draw_negatives
from padrec.eval.protocol import Protocol
from padrec.eval.report import git_commit, write_bench
from padrec.eval.results import Results

__all__ = [
    "Evaluator",
    "Protocol",
    "Results",
    "draw_negatives",
    "git_commit",
    "load_or_draw_negatives",
    "metrics_from_ranks",
    "sampled_ranks",
    "target_ranks",
    "write_bench",
]
