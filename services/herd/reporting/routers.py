"""What `herd router train/eval/list` and `herd replay --router` print and draw.

Figures (herd.policy.router.evaluate): accuracy = share of prompts whose final answer scores >= the
router's cut; cost = attributed USD per 1k prompts; APGR and CPT(50%) as RouteLLM defines them (Ong et
al. 2024, arXiv 2406.18665); the Herd figure as Hari & Thomson 2023 (arXiv 2310.19902) state it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from herd.policy.calibrate import Match, MaxCostPer1k
from herd.policy.router.compose import RoutedReplay
from herd.policy.router.evaluate import RouterEval
from herd.policy.router.model import Router
from herd.policy.search import SearchResult
from herd.policy.sweep import SweepResult
from herd.reporting.plot import save_png
from herd.reporting.policies import usd


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1%}"


def _fig(v: float, why: str) -> str:
    return f"{v:.3f}" if math.isfinite(v) else f"not defined ({why})"


def eval_lines(ev: RouterEval, router: Router) -> list[str]:
    """The held-out comparison table and the three figures, one sentence each."""
    routed = ", ".join(f"{m} {s:.0%}" for m, s in ev.shares.items())
    rows = [(f"router (tau {router.tau:.2f})", *ev.router, routed)]
    rows += [(f"{m} alone", a, c, "") for m, (a, c) in ev.single.items()]
    rows.append(("oracle", *ev.oracle, "per prompt the cheapest model that is right"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  accuracy  cost per 1k prompts"]
    lines += [f"{name:{width}}  {a:8.3f}  {usd(c):>19}  {note}".rstrip() for name, a, c, note in rows]
    h = ev.herd
    if ev.no_tradeoff is not None:
        lines.append(
            f"APGR, CPT: not defined — {ev.no_tradeoff} (RouteLLM's figures need a weak -> strong trade-off)"
        )
    else:
        lines += [
            f"APGR {_fig(ev.apgr, 'the router costs the same at every tau')}: share of the {ev.weak} -> "
            f"{ev.strong} accuracy gap the router recovers, averaged over its cost range (RouteLLM; 1 = the "
            "strong model's accuracy at every cost)",
            f"CPT(50%) {_fig(ev.cpt50, 'never reached')}: the cost, in units of the {ev.weak} -> {ev.strong} "
            "cost gap, at which the router recovers half the accuracy gap (RouteLLM; lower is better)",
        ]
    lines += [
        f"Herd figure: of the {h.n_strong_wrong} prompts {h.strong} (the most accurate single model) gets "
        f"wrong, the router sent {h.rescued} ({_pct(h.share)}) to a model that gets them right "
        f"(possible: {_pct(h.possible)}; Hari & Thomson 2023)",
    ]
    return lines


def routed_lines(routed: RoutedReplay, summaries: dict[str, str]) -> list[str]:
    """`herd replay --router`: the composed figures, then each entry group's cascade."""
    lines = [
        f"quality: {routed.quality:.3f}",
        f"cost per 1k prompts: {usd(routed.cost_per_1k)}",
        f"escalated prompts: {float((routed.escalations > 0).mean()):.1%}",
    ]
    if routed.failed.any():
        lines.append(f"failed prompts (errors, score 0): {float(routed.failed.mean()):.1%}")
    for m, share in routed.entry_share().items():
        r = routed.by_entry[m]
        lines.append(
            f"entry {m}: {share:.1%} of prompts, quality {r.quality:.3f}, {usd(r.cost_per_1k)} per 1k: "
            f"{summaries[m]}"
        )
    return lines


def verdict(target: Any, ev: RouterEval) -> str:
    """One sentence: does the router at its τ meet the target on the held-out prompts too?"""

    acc, cost = ev.router
    if isinstance(target, MaxCostPer1k):
        ok = cost <= target.usd * (1 + 1e-12)
        what = f"costs {usd(cost)} per 1k, {'within' if ok else 'over'} the budget of {usd(target.usd)}"
    else:
        floor = target.at * ev.single[target.model][0] if isinstance(target, Match) else target.quality
        ok = acc >= floor - 1e-12
        what = f"accuracy is {acc:.3f}, {'meeting' if ok else 'below'} the target {floor:.3f}"
    return f"{'' if ok else 'NOTE: '}on the {ev.n} held-out prompts the router {what}"


def plot_router(
    ev: RouterEval,
    router: Router,
    cascade: SearchResult | SweepResult | None,
    composed: tuple[float, float] | None,
    title: str,
    path: Path,
) -> None:
    """The router's accuracy-cost curve over τ, its chosen τ, each model alone, the oracle, and the
    cascade's policies kept by the search (grey) with their Pareto front, all on the same held-out
    prompts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - matplotlib only when a plot is drawn
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a plot is drawn

    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if cascade is not None and len(cascade):
        ax.scatter(cascade.cost_per_1k, cascade.quality, s=4, color="0.8", label="cascade policies")
        front = cascade.front()
        ax.step(
            cascade.cost_per_1k[front],
            cascade.quality[front],
            where="post",
            color="tab:red",
            label="cascade Pareto front",
        )
    order = np.argsort(ev.curve.cost_per_1k, kind="stable")
    ax.plot(
        ev.curve.cost_per_1k[order],
        ev.curve.accuracy[order],
        "-o",
        ms=2,
        color="tab:blue",
        label="router, tau 0..1",
    )
    ax.scatter(
        [ev.router[1]],
        [ev.router[0]],
        marker="*",
        s=220,
        color="tab:blue",
        zorder=4,
        label=f"router at tau {router.tau:.2f}",
    )
    if composed is not None:
        ax.scatter(
            [composed[1]],
            [composed[0]],
            marker="P",
            s=120,
            color="tab:purple",
            zorder=4,
            label="router -> cascade",
        )
    for m, (a, c) in ev.single.items():
        ax.scatter([c], [a], marker="s", s=50, color="tab:green", zorder=3)
        ax.annotate(f"{m} alone", (c, a), fontsize=8, xytext=(5, -10), textcoords="offset points")
    ax.axhline(ev.oracle[0], color="0.4", ls="--", lw=1, label=f"oracle {ev.oracle[0]:.3f}")
    save_png(
        fig,
        ax,
        path,
        title=title,
        xlabel="cost per 1k prompts (USD, attributed, replayed)",
        ylabel="accuracy (held-out)",
        legend=True,
    )
