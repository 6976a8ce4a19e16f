"""PeRFICS: one number per policy that weighs the quality users get, what refinement added, and cost.

    PeRFICS = w_p · P_refined + w_r · (P_refined − P_base) − w_c · log2(C / C_min)

- P_base, P_refined: mean quality in [0, 1] of the policy's first answer and of its last (refined)
  answer per prompt, under one scorer (the `perfics_inputs` view).
- C: the policy's attributed cost per 1k prompts in USD, refinement and escalation calls included.
- C_min: the cheapest policy's C for the same task and scorer, so the cheapest pays no cost penalty
  and each doubling of cost takes w_c quality points.
- Defaults: w_p = 1.0, w_r = 0.5, w_c = 0.05.

Zero cost: log2 of 0 is undefined, so a policy whose C is 0 pays no cost penalty, and C_min is the
cheapest *non-zero* C of the group (with a free policy in the group, the others are compared with
the cheapest paid one rather than all getting an infinite penalty).

This is Herd's own formula: the PeRFICS paper's exact equation is not public in any source we could
read. docs/cost-model.md explains each term. A policy without quality (no scores under the scorer)
gets no PeRFICS and no rank. Everything here is pure: rows in, rows out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

# Scores closer than this are ties (the same inputs through different float paths).
_TIE = 1e-12


@dataclass(frozen=True)
class Weights:
    p: float = 1.0  # refined quality: what users get
    r: float = 0.5  # refinement gain: rewards self-critique that helps
    c: float = 0.05  # per doubling of cost per 1k prompts

    @classmethod
    def parse(cls, text: str) -> Weights:
        """`p=1,r=0.5,c=0.05`; keys left out keep their default. Raises ValueError with the reason."""
        values: dict[str, float] = {}
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in ("p", "r", "c"):
                raise ValueError(f"{part!r}: expected p=NUMBER, r=NUMBER or c=NUMBER")
            if key in values:
                raise ValueError(f"{key} is given twice")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{key}={raw.strip()!r} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{key}={raw.strip()} must be a finite number >= 0")
            values[key] = value
        return cls(**values)

    def __str__(self) -> str:
        return f"p={self.p:g},r={self.r:g},c={self.c:g}"


@dataclass(frozen=True)
class PolicyInput:
    policy: str
    task: str
    scorer: str | None
    quality_base: float | None
    quality_refined: float | None
    cost_per_1k_prompts_usd: Decimal


@dataclass(frozen=True)
class PolicyScore:
    policy: str
    task: str
    scorer: str | None
    perfics: float | None
    cost_penalty: float | None  # the w_c · log2(C / C_min) subtracted; 0 for the cheapest
    rank: int | None  # 1 = best within (task, scorer); ties share a rank


def cost_penalty(cost: Decimal, cost_min: Decimal | None, weights: Weights) -> float:
    """w_c · log2(C / C_min); 0 when C or C_min is 0 (or unknown): there is no log of 0."""
    if cost <= 0 or cost_min is None or cost_min <= 0:
        return 0.0
    return weights.c * math.log2(float(cost / cost_min))


def perfics(
    quality_base: float, quality_refined: float, cost: Decimal, cost_min: Decimal | None, weights: Weights
) -> float:
    gain = quality_refined - quality_base
    return weights.p * quality_refined + weights.r * gain - cost_penalty(cost, cost_min, weights)


def _qualities(row: PolicyInput) -> tuple[float, float] | None:
    """(base, refined), or None when the scorer left either unknown: no PeRFICS without both."""
    if row.quality_base is None or row.quality_refined is None:
        return None
    return row.quality_base, row.quality_refined


def score(rows: Sequence[PolicyInput], weights: Weights | None = None) -> list[PolicyScore]:
    """PeRFICS and rank of every row, in the order given, ranked within (task, scorer)."""
    weights = weights or Weights()
    groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[(row.task, row.scorer)].append(index)
    values: list[float | None] = [None] * len(rows)
    penalties: list[float | None] = [None] * len(rows)
    ranks: list[int | None] = [None] * len(rows)
    for members in groups.values():
        scored = {i: q for i in members if (q := _qualities(rows[i])) is not None}
        paid = [rows[i].cost_per_1k_prompts_usd for i in scored if rows[i].cost_per_1k_prompts_usd > 0]
        cost_min = min(paid) if paid else None
        for i, (base, refined) in scored.items():
            cost = rows[i].cost_per_1k_prompts_usd
            penalties[i] = cost_penalty(cost, cost_min, weights)
            values[i] = perfics(base, refined, cost, cost_min, weights)
        for i, rank in _competition_ranks([(i, values[i]) for i in scored]).items():
            ranks[i] = rank
    return [
        PolicyScore(row.policy, row.task, row.scorer, values[i], penalties[i], ranks[i])
        for i, row in enumerate(rows)
    ]


def _competition_ranks(items: list[tuple[int, float | None]]) -> dict[int, int]:
    """Highest first; equal scores share the rank and the next one skips (1, 2, 2, 4)."""
    ordered = sorted(((v, i) for i, v in items if v is not None), key=lambda pair: -pair[0])
    ranks: dict[int, int] = {}
    previous: float | None = None
    rank = 0
    for position, (value, index) in enumerate(ordered, start=1):
        if previous is None or previous - value > _TIE:
            rank = position
        ranks[index] = rank
        previous = value
    return ranks
