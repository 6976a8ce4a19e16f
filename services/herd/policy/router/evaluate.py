"""Evaluate a router on held-out calibration data, with no model call.

Per prompt the router picks a model; the prompt then ends with that model's answer (good: score >=
cut) at that model's attributed cost. Against it: each model alone, the oracle (per prompt the
cheapest model whose answer is good, if any), RouteLLM's APGR and CPT over the τ sweep, and the Herd
paper's rescue figure. Every function takes a `choice` array so any router (or none) can be scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from herd.policy.data import CalibrationData
from herd.policy.router.model import Router, route_rule
from herd.policy.router.train import good_labels


def _costs(data: CalibrationData, models: Sequence[str]) -> np.ndarray:
    return np.column_stack([data.plain[m].cost_usd for m in models])


def outcome(
    data: CalibrationData, models: Sequence[str], choice: np.ndarray, cut: float = 0.5
) -> tuple[float, float]:
    """(accuracy, USD per 1k prompts) when prompt i ends at model `choice[i]` (index into `models`).

    Accuracy is the mean of good = ok and score >= cut (an error counts as wrong), as replay with
    scorer_cut gives for a single model; cost is that model's attributed cost on the prompt."""
    rows = np.arange(data.n)
    good = good_labels(data, models, cut)[rows, choice]
    return float(good.mean()), float(_costs(data, models)[rows, choice].mean() * 1000.0)


def oracle_choice(data: CalibrationData, models: Sequence[str], cut: float = 0.5) -> np.ndarray:
    """(n,) per prompt the cheapest model (by its cost on that prompt) whose answer is good; the
    cheapest model when none is. Its accuracy is the share of prompts some model answers well."""
    good = good_labels(data, models, cut)
    cost = _costs(data, models)
    cheapest_good = np.argmin(np.where(good, cost, np.inf), axis=1)
    return np.asarray(np.where(good.any(axis=1), cheapest_good, np.argmin(cost, axis=1)))


def strong_weak(data: CalibrationData, models: Sequence[str], cut: float = 0.5) -> tuple[int, int]:
    """(strong, weak) model indices as RouteLLM pairs them: strong = most capable single model (best
    accuracy on these prompts; ties: the cheaper), weak = the cheapest (mean cost per prompt)."""
    acc = good_labels(data, models, cut).mean(axis=0)
    mean_cost = _costs(data, models).mean(axis=0)
    strong = int(np.lexsort((mean_cost, -acc))[0])
    return strong, int(np.argmin(mean_cost))


@dataclass(frozen=True)
class HerdFigure:
    """Of the `n_strong_wrong` prompts the strong model gets wrong, `rescued` were routed to a model
    that gets them right (`share` = rescued / n_strong_wrong, NaN if none); `possible`: the share some
    model gets right (the oracle's ceiling for this figure)."""

    strong: str
    n_strong_wrong: int
    rescued: int
    share: float
    possible: float


def herd_figure(
    data: CalibrationData,
    models: Sequence[str],
    choice: np.ndarray,
    cut: float = 0.5,
    strong: int | None = None,
) -> HerdFigure:
    """The Herd paper's figure (Hari & Thomson 2023, arXiv 2310.19902: "in cases where GPT is not
    able to answer the query, Herd is able to identify a model that can, at least 40% of the time"),
    with the most capable single model in GPT's place."""
    good = good_labels(data, models, cut)
    s = strong_weak(data, models, cut)[0] if strong is None else strong
    wrong = ~good[:, s]
    n = int(wrong.sum())
    rescued = int(good[np.arange(data.n), choice][wrong].sum())
    possible = float(good[wrong].any(axis=1).mean()) if n else float("nan")
    return HerdFigure(models[s], n, rescued, rescued / n if n else float("nan"), possible)


@dataclass(frozen=True)
class Curve:
    """Router quality–cost points over a τ sweep, arrays of shape (t,): `tau`, `accuracy`,
    `cost_per_1k` (USD), `x` = (cost − weak cost) / (strong cost − weak cost), the cost axis in units
    of the weak→strong gap (with two models of fixed cost: RouteLLM's share of strong-model calls),
    `strong_share` the share of prompts routed to the strong model."""

    tau: np.ndarray
    accuracy: np.ndarray
    cost_per_1k: np.ndarray
    x: np.ndarray
    strong_share: np.ndarray


def curve(
    data: CalibrationData,
    models: Sequence[str],
    p_good: np.ndarray,
    route_cost: np.ndarray,
    cut: float = 0.5,
    taus: np.ndarray | None = None,
) -> Curve:
    """Sweep τ (default 0, 0.01, ..., 1) over predicted `p_good` (n, k); `route_cost` (k,) is the
    router's mean cost per model (the rule's order). O(t·n·k)."""
    taus = np.linspace(0.0, 1.0, 101) if taus is None else np.asarray(taus, dtype=float)
    strong, weak = strong_weak(data, models, cut)
    c_strong = outcome(data, models, np.full(data.n, strong), cut)[1]
    c_weak = outcome(data, models, np.full(data.n, weak), cut)[1]
    acc, cost, share = np.zeros(len(taus)), np.zeros(len(taus)), np.zeros(len(taus))
    for i, tau in enumerate(taus):
        choice = route_rule(p_good, route_cost, float(tau))
        acc[i], cost[i] = outcome(data, models, choice, cut)
        share[i] = float((choice == strong).mean())
    gap = c_strong - c_weak
    x = (cost - c_weak) / gap if gap > 0 else share
    return Curve(taus, acc, cost, x, share)


def apgr(x: np.ndarray, accuracy: np.ndarray, weak: float, strong: float) -> float:
    """Average performance gap recovered (RouteLLM: Ong et al. 2024, arXiv 2406.18665, and its
    routellm/evals/evaluate.py): with points sorted by cost x, APGR = (AUC_router − AUC_weak) /
    (AUC_strong − AUC_weak), each AUC the trapezoid integral over the router's own x range, the weak and
    strong ones of their constant accuracies. 1 = strong model's quality throughout; NaN if strong == weak."""
    order = np.lexsort((accuracy, x))
    xs, ys = x[order], accuracy[order]
    width = float(xs[-1] - xs[0])
    if strong == weak or width <= 0:
        return float("nan")
    auc = float(np.sum((ys[1:] + ys[:-1]) * np.diff(xs)) / 2.0)
    return (auc - weak * width) / ((strong - weak) * width)


def cpt(x: np.ndarray, accuracy: np.ndarray, weak: float, strong: float, pgr: float = 0.5) -> float:
    """Cost to reach a performance gap recovered (RouteLLM's CPT(pgr)): the least cost x on the curve
    (linear between points sorted by x) at which accuracy >= weak + pgr·(strong − weak). RouteLLM
    computes it with np.interp, the same value when accuracy rises with cost. NaN if never reached."""
    order = np.lexsort((accuracy, x))
    xs, ys = x[order], accuracy[order]
    target = weak + pgr * (strong - weak)
    hit = np.nonzero(ys >= target - 1e-12)[0]
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def no_tradeoff(single: dict[str, tuple[float, float]], strong: str, weak: str) -> str | None:
    """Why APGR and CPT are not defined on these prompts, else None. Both measure the router along the
    weak -> strong trade-off (more accuracy for more cost): there is none when the most accurate
    model costs no more than the cheapest (it is the cheapest, or prices tie, as at $0), or when the
    cheapest is as accurate. `single`: per model (accuracy, USD per 1k prompts) alone."""
    (strong_acc, strong_cost), (weak_acc, weak_cost) = single[strong], single[weak]
    if strong_cost <= weak_cost:  # also when strong is weak: one model is both
        return f"the most accurate model ({strong}) is also the cheapest: route everything to it"
    if strong_acc <= weak_acc:
        return (
            f"the cheapest model ({weak}) is as accurate as the most accurate ({strong}, "
            f"{strong_acc:.3f}): route everything to {weak}"
        )
    return None


@dataclass(frozen=True)
class RouterEval:
    """Held-out figures: `router` (accuracy, USD per 1k) at the router's τ; `single` per model;
    `oracle`; `strong`/`weak` names; `apgr`, `cpt50` on `curve` (NaN when not defined: `no_tradeoff`
    says why, when that is the reason); `herd` the rescue figure; `shares` per model the share of
    prompts routed to it."""

    n: int
    router: tuple[float, float]
    single: dict[str, tuple[float, float]]
    oracle: tuple[float, float]
    strong: str
    weak: str
    apgr: float
    cpt50: float
    herd: HerdFigure
    curve: Curve
    shares: dict[str, float]
    no_tradeoff: str | None = None


def evaluate(
    router: Router, texts: Sequence[str], data: CalibrationData, taus: np.ndarray | None = None
) -> RouterEval:
    """Score `router` on `data` (held-out rows; `texts[i]` the prompt of row i) with its own cut.
    Rows on which a routed model gave no answer are left out: a non-answer is not a wrong answer."""
    models, cut = list(router.models), router.cut
    answered = data.answered(models)
    if not answered.all():
        texts = [t for t, keep in zip(texts, answered, strict=True) if keep]
        data = data.take(np.flatnonzero(answered))
    p = router.p_good(texts)
    choice = route_rule(p, router.cost_usd, router.tau)
    s, w = strong_weak(data, models, cut)
    single = {m: outcome(data, models, np.full(data.n, j), cut) for j, m in enumerate(models)}
    c = curve(data, models, p, router.cost_usd, cut, taus)
    weak_q, strong_q = single[models[w]][0], single[models[s]][0]
    reason = no_tradeoff(single, models[s], models[w])
    # Without a trade-off CPT would still find a number (the target is reached at once): not a figure.
    pgr, cost = (
        (float("nan"), float("nan"))
        if reason is not None
        else (apgr(c.x, c.accuracy, weak_q, strong_q), cpt(c.x, c.accuracy, weak_q, strong_q, 0.5))
    )
    return RouterEval(
        data.n,
        outcome(data, models, choice, cut),
        single,
        outcome(data, models, oracle_choice(data, models, cut), cut),
        models[s],
        models[w],
        pgr,
        cost,
        herd_figure(data, models, choice, cut, s),
        c,
        {m: float((choice == j).mean()) for j, m in enumerate(models)},
        reason,
    )


def _num(v: float) -> float | None:
    """JSON has no NaN (and JSONB refuses it): an undefined figure is null."""
    return float(v) if math.isfinite(v) else None


def figures_json(ev: RouterEval) -> dict[str, Any]:
    """The held-out figures stored with a router version (JSONB; NaN as null)."""
    return {
        "prompts": ev.n,
        "router": {"accuracy": ev.router[0], "cost_per_1k_usd": ev.router[1]},
        "single": {m: {"accuracy": a, "cost_per_1k_usd": c} for m, (a, c) in ev.single.items()},
        "oracle": {"accuracy": ev.oracle[0], "cost_per_1k_usd": ev.oracle[1]},
        "strong": ev.strong,
        "weak": ev.weak,
        "apgr": _num(ev.apgr),
        "cpt50": _num(ev.cpt50),
        "no_tradeoff": ev.no_tradeoff,
        "herd": {
            "strong": ev.herd.strong,
            "strong_wrong": ev.herd.n_strong_wrong,
            "rescued": ev.herd.rescued,
            "share": _num(ev.herd.share),
            "possible": _num(ev.herd.possible),
        },
        "shares": ev.shares,
    }
