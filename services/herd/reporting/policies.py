"""What `herd replay` and `herd calibrate` print and draw: replayed figures with their 95% bootstrap
intervals, the Pareto front of a sweep (PNG), the chosen policy with train and held-out estimates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from herd.policy.calibrate import Choice, Match
from herd.policy.replay import Interval, ReplayBootstrap, ReplayResult
from herd.policy.search import SearchResult
from herd.policy.sweep import SweepResult
from herd.reporting.plot import save_png


def usd(value: float) -> str:
    """4 significant digits: $0.004321, $12.35."""
    if value == 0 or not math.isfinite(value):
        return f"${value:.2f}"
    return f"${value:.{max(2, 3 - math.floor(math.log10(abs(value))))}f}"


def interval(i: Interval, money: bool = False, percent: bool = False) -> str:
    def fmt(v: float) -> str:
        if math.isnan(v):
            return "-"
        return usd(v) if money else (f"{v:.1%}" if percent else f"{v:.3f}")

    return f"{fmt(i.value)} (95% CI {fmt(i.low)} to {fmt(i.high)})"


def replay_lines(result: ReplayResult, boot: ReplayBootstrap) -> list[str]:
    """Quality, cost per 1k prompts and per-tier escalation rates, each with its interval."""
    lines = [
        f"quality: {interval(boot.quality)}",
        f"cost per 1k prompts: {interval(boot.cost_per_1k, money=True)}",
    ]
    for tier, rate in zip(result.policy.tiers[:-1], boot.escalation_rate, strict=False):
        lines.append(f"escalation from {tier.model}: {interval(rate, percent=True)}")
    if result.failure_rate:
        lines.append(f"failed prompts (errors, score 0): {result.failure_rate:.1%}")
    return lines


def choice_lines(choice: Choice) -> list[str]:
    """What `herd calibrate` prints after the policy text: the method, what carries the promise, the
    figures on the rows not used to search, too-thin advice, reliability of P(correct)."""
    held = choice.held_out_intervals
    guarantee = choice.method == "guarantee"
    other = "test part" if guarantee else "held-out"
    if guarantee:
        lines = [
            f"method: guarantee at {choice.confidence:.0%} confidence (Learn then Test: candidates ordered "
            f"by cost on one part of the prompts, tested in that order on the other; {choice.test} test)",
            f"searched {choice.searched} policies on {len(choice.train_rows)} prompts (order part); "
            f"tested {choice.tested} of {choice.candidates} candidates on {len(choice.held_out_rows)} "
            "others (test part)",
            ("GUARANTEE: " if choice.guaranteed else "") + choice.message,
        ]
    else:
        lines = [
            "method: point estimate (no guarantee: the cheapest policy whose estimate on the train prompts "
            "meets the target)",
            f"searched {choice.searched} policies on {len(choice.train_rows)} train prompts; estimated on "
            f"{len(choice.held_out_rows)} held-out prompts",
        ]
    lines += [
        f"{'order part' if guarantee else 'train'}: quality {choice.train_quality:.3f}, cost per 1k prompts "
        f"{usd(choice.train_cost_per_1k)}",
        f"{other}: quality {interval(held.quality)}",
        f"{other}: cost per 1k prompts {interval(held.cost_per_1k, money=True)}",
    ]
    for tier, rate in zip(choice.policy.tiers[:-1], held.escalation_rate, strict=False):
        lines.append(f"{other}: escalation from {tier.model} {interval(rate, percent=True)}")
    if choice.reference_quality is not None and isinstance(choice.target, Match):
        train_q, held_q = choice.reference_quality
        first = "order part" if guarantee else "train"
        lines.append(f"{choice.target.model} alone: quality {train_q:.3f} ({first}), {held_q:.3f} ({other})")
    if guarantee and choice.guaranteed:
        lines.append(
            f"(the {other} figures describe the chosen policy on the prompts that tested it; the promise "
            "is the GUARANTEE line)"
        )
    elif not guarantee:
        lines.append(choice.message if choice.meets_target_on_held_out else f"NOTE: {choice.message}")
    if choice.thin is not None:
        lines.append(thin_text(choice))
    for r in choice.reliability:
        variant = "+refine" if r.refine else ""
        lines.append(
            f"reliability of {r.model}{variant} ({r.measure} -> P(correct), {r.n} {other.replace(' ', '-')} "
            "answers): "
            f"ECE {r.ece_before:.3f} raw, {r.ece_after:.3f} calibrated"
        )
    return lines


def thin_text(choice: Choice) -> str:
    """Too little evidence to save: which cheaper policy looked good, and how many prompts would do."""
    thin = choice.thin
    if thin is None:
        return ""
    n = len(choice.train_rows) + len(choice.held_out_rows)
    looked = (
        f"TOO THIN TO SAVE: {thin.policy.summary()} ({usd(thin.cost_per_1k)} per 1k prompts against "
        f"{usd(choice.train_cost_per_1k)}) met the target on the test part by its point estimate "
        f"(quality {thin.quality:.3f}) but cannot be promised from {n} prompts"
    )
    if thin.prompts is None:
        return f"{looked}; it sits too close to the target for any sample size Herd considers."
    more = max(thin.prompts - n, 0)
    return (
        f"{looked}; about {thin.prompts:,} calibration prompts ({more:,} more) would let it pass with "
        f"{thin.power:.0%} probability, if its per-prompt results hold."
    )


def promise_text(estimates: dict[str, Any]) -> str:
    """`herd policy list`'s word on a version's promise, from its stored estimates."""
    method = estimates.get("method")
    if method == "guarantee" and estimates.get("guaranteed"):
        bound = estimates.get("bound")
        figure = f", bound {bound:+.3f}" if isinstance(bound, int | float) else ""
        return f"guaranteed at {float(estimates.get('confidence') or 0):.0%}{figure}"
    if method == "guarantee":
        return f"NO guarantee at {float(estimates.get('confidence') or 0):.0%} (recorded anyway)"
    return "point estimate, no guarantee"


def front_rows(points: SearchResult | SweepResult, limit: int = 15) -> list[tuple[float, float, str]]:
    """(cost per 1k, quality, summary) of the Pareto front, cheapest first, thinned to `limit` rows."""
    front = points.front()
    if len(front) > limit:
        front = front[np.linspace(0, len(front) - 1, limit).round().astype(int)]
    return [
        (float(points.cost_per_1k[i]), float(points.quality[i]), points.policy(int(i)).summary())
        for i in front
    ]


def plot_sweep(
    points: SearchResult | SweepResult, current: tuple[float, float, str] | None, title: str, path: Path
) -> None:
    """The points kept (grey: every swept policy, or the searched front alone), the Pareto front (red)
    and the current policy (star), as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - matplotlib only when a plot is drawn
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a plot is drawn

    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(
        points.cost_per_1k,
        points.quality,
        s=4,
        color="0.75",
        label=f"{len(points):,} of {points.searched:,} policies",
    )
    front = points.front()
    ax.step(
        points.cost_per_1k[front], points.quality[front], where="post", color="tab:red", label="Pareto front"
    )
    ax.scatter(points.cost_per_1k[front], points.quality[front], s=18, color="tab:red", zorder=3)
    for i in points.front()[:: max(1, len(front) // 6)]:
        label = points.policy(int(i)).summary()
        ax.annotate(
            label,
            (points.cost_per_1k[i], points.quality[i]),
            fontsize=7,
            xytext=(5, -10),
            textcoords="offset points",
        )
    if current is not None:
        ax.scatter(
            [current[0]],
            [current[1]],
            marker="*",
            s=220,
            color="tab:blue",
            zorder=4,
            label=f"current: {current[2]}",
        )
    positive = points.cost_per_1k[points.cost_per_1k > 0]
    if positive.size and positive.max() / positive.min() >= 10:
        ax.set_xscale("log")
    save_png(
        fig,
        ax,
        path,
        title=title,
        xlabel="cost per 1k prompts (USD, attributed, replayed)",
        ylabel="quality",
        legend=True,
    )
