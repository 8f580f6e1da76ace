"""Calibrate PAD's gates on validation users: how much of the learned mixture each popularity bin keeps.

Why: the gates learn from training targets, where cold items are rare positives, and start from a prior that
hands the cold bins to the text side. Where text says little about what users pick next (ml-1m's movie titles),
that prior survives training and costs exactly the cold items PAD is meant to help. Calibration asks held-out
users instead: for every gate bin, the share ``α`` of the learned mixture (the rest goes to the collaborative
expert alone: the backbone itself when that expert is frozen) is chosen on a seeded half of the validation
users: the best NDCG@10 of those users under one constraint, that their NDCG@10 on cold items be at least both
the collaborative expert's alone (no loss to the backbone) and the learned mixture's (a gain the gates already
made is not given away). ``α = 0`` everywhere meets the first and ``α = 1`` the second; a search that cannot meet
both keeps the best cold score it finds. Why not weigh overall and cold gains alike: on ml-1m that rule bought
+32% on cold items with -6% overall (blending rescales a bin's scores against the others, which moves cold items
up every list), a trade a default must not make. The other half of the validation users is left untouched, so
configurations can still be compared on users no choice was made on.

A cold budget (``calibrate_budget``, :func:`search_budget`) is the other rule, for users who run PAD for its cold
items: first one share for every bin, along a path that goes past the learned mixture (1) on to the text-side
expert alone (2), the one with the best cold NDCG@10 whose overall NDCG@10 stays within ``budget`` of the best any
share reaches; then the same per-bin sweep as above, for overall NDCG@10, holding that cold level. Why one share
first: moving a single bin towards the text side rescales its items against every other bin's and sinks them (on
Beauty, cold NDCG@10 fell whichever cold bin moved), while moving all bins together re-ranks each list by title
similarity as a whole, which is what lifts cold items where titles describe them (Beauty); where they do not
(ml-1m), no share past 1 helps cold items, the backbone alone (share 0) keeps them best, and the per-bin sweep only
leaves it where overall NDCG@10 rises at no cold cost.

A deviation from the paper (which has no such step); padrec's ``simcal`` and ``simcold`` presets use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from padrec.data.split import Split
from padrec.eval.evaluator import Evaluator
from padrec.eval.metrics import metrics_from_ranks
from padrec.eval.protocol import Protocol

#: the mixture shares tried for every bin
GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: the shares tried with a cold budget, per bin and (SHARES) for all bins at once: past 1 towards the text side
TEXT_GRID: tuple[float, ...] = (*GRID, 1.25, 1.5, 1.75, 2.0)
SHARES: tuple[float, ...] = (*GRID, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)


def validation_halves(split: Split, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions into ``split.users("valid")``: (calibration half, selection half), seeded, each sorted."""
    n = len(split.users("valid"))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def _ndcg(ranks: np.ndarray) -> float:
    return float(metrics_from_ranks(ranks, (10,))["NDCG@10"]) if len(ranks) else 0.0


def _sweep(
    measure: Callable[[Sequence[float]], tuple[float, float]],
    blend: list[float],
    best: tuple[float, float],
    grid: Sequence[float],
    better: Callable[[tuple[float, float], tuple[float, float]], bool],
) -> tuple[list[float], tuple[float, float], int]:
    """One coordinate sweep, coldest bin first: a bin takes a grid value where ``better(got, best)``; returns the
    blend, its (overall, cold) and how many blends were measured."""
    evaluations = 0
    for b in reversed(range(len(blend))):
        start = blend[b]  # already measured
        for a in grid:
            if a == start:
                continue
            trial = [*blend[:b], float(a), *blend[b + 1 :]]
            got = measure(trial)
            evaluations += 1
            if better(got, best):
                blend, best = trial, got
    return blend, best, evaluations


def search_blend(
    measure: Callable[[Sequence[float]], tuple[float, float]], n_bins: int, grid: Sequence[float] = GRID
) -> dict[str, Any]:
    """Coordinate search, coldest bin first, one sweep: each bin's share is the grid value with the best overall
    score among those keeping ``cold >= max(cold of the collaborative expert alone (measure([0] * n)), cold of the
    learned mixture (measure([1] * n)))``; when none does, the one with the best cold score. A bin changes only on
    a strict improvement.

    ``measure(blend) -> (overall, cold)``; pure apart from it, so the rule is testable on made-up numbers.
    """
    alone = measure([0.0] * n_bins)
    blend = [1.0] * n_bins
    best = learned = measure(blend)
    floor = max(alone[1], learned[1])
    evaluations = 2

    def better(got: tuple[float, float], now: tuple[float, float]) -> bool:
        """Feasible beats infeasible; among feasible, overall decides; among infeasible, cold does."""
        if got[1] >= floor:
            return now[1] < floor or got[0] > now[0]
        return now[1] < floor and got[1] > now[1]

    blend, best, swept = _sweep(measure, blend, best, grid, better)
    evaluations += swept
    # one sweep can wander: the two ends (the backbone's scores, the learned mixture) stay in the running
    for end, got in (([0.0] * n_bins, alone), ([1.0] * n_bins, learned)):
        if better(got, best):
            blend, best = end, got
    return {
        "blend": blend,
        "overall": best[0],
        "cold": best[1],
        "cold_floor": floor,
        "objective": "overall, subject to cold >= max(collab-alone cold, learned-mixture cold)",
        "evaluations": evaluations,
    }


def search_budget(
    measure: Callable[[Sequence[float]], tuple[float, float]],
    n_bins: int,
    budget: float,
    shares: Sequence[float] = SHARES,
    grid: Sequence[float] = TEXT_GRID,
) -> dict[str, Any]:
    """The cold-budget rule: the share ``s`` (one for every bin) with the best cold score among those whose overall
    score is at least ``(1 - budget) *`` the best overall score of any share (ties: the better overall); then a
    per-bin sweep, coldest bin first, that takes a grid value only where overall rises and cold stays at least
    ``s``'s. ``measure(blend) -> (overall, cold)``, as for :func:`search_blend`."""
    if not 0 <= budget < 1:
        raise ValueError(f"calibrate_budget must be in [0, 1), got {budget}")
    at = {float(s): measure([float(s)] * n_bins) for s in shares}
    top = max(o for o, _ in at.values())
    floor = (1 - budget) * top
    share = max((s for s in at if at[s][0] >= floor), key=lambda s: (at[s][1], at[s][0]))
    cold_level = at[share][1]
    blend, best, swept = _sweep(
        measure, [share] * n_bins, at[share], grid, lambda got, now: got[1] >= cold_level and got[0] > now[0]
    )
    evaluations = len(at) + swept
    return {
        "blend": blend,
        "overall": best[0],
        "cold": best[1],
        "share": share,
        "budget": budget,
        "overall_floor": floor,
        "shares": {str(s): {"overall": o, "cold": c} for s, (o, c) in at.items()},
        "objective": f"cold, subject to overall >= (1 - {budget:g}) x the best share's overall; then overall per "
        "bin, holding that cold level",
        "evaluations": evaluations,
    }


def calibrate(pad: Any, split: Split, seed: int = 0, budget: float = 0.0) -> dict[str, Any]:
    """Calibrate ``pad``'s per-bin mixture share on the calibration half of the validation users, in place.

    Returns what was chosen and measured: ``blend`` (one share per gate bin), the calibration users' NDCG@10
    overall and on cold items after calibration, with the learned mixture (all ones) and with the collaborative
    expert alone (all zeros), and how many users and evaluations it took.
    """
    net = pad.net
    n_bins = int(net.gates.shape[1])
    ev = Evaluator(split, Protocol())
    users, _ = validation_halves(split, seed)
    cold = ev.group_labels("valid")["cold"][users]
    seen: dict[tuple[float, ...], tuple[float, float]] = {}

    def measure(blend: Sequence[float]) -> tuple[float, float]:
        key = tuple(float(a) for a in blend)
        if key not in seen:
            net.set_blend(key)
            ranks = ev.ranks(pad, "valid", subset=users)
            seen[key] = (_ndcg(ranks), _ndcg(ranks[cold]))
        return seen[key]

    if budget:
        grid = TEXT_GRID
        found = search_budget(measure, n_bins, budget, SHARES, grid)
    else:
        grid = GRID
        found = search_blend(measure, n_bins, grid)
    net.set_blend(found["blend"])
    learned, alone = seen[(1.0,) * n_bins], seen[(0.0,) * n_bins]
    return {
        **found,
        "learned": {"overall": learned[0], "cold": learned[1]},
        "collab_alone": {"overall": alone[0], "cold": alone[1]},
        "users": len(users),
        "cold_users": int(cold.sum()),
        "seed": seed,
        "budget": budget,
        "grid": list(grid),
        "metric": "NDCG@10 on the calibration half of the validation users (full ranking, history masked)",
    }
