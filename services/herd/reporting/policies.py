"""What `herd replay` and `herd calibrate` print and draw: replayed figures with their 95% bootstrap
intervals, the Pareto front of a sweep (PNG), the chosen policy with train and held-out estimates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from herd.policy.calibrate import Choice, Match, MaxCostPer1k, MinQuality
from herd.policy.replay import Interval, ReplayBootstrap, ReplayResult
from herd.policy.sweep import SweepResult


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
    held = choice.held_out_intervals
    lines = [
        f"searched {choice.searched} policies on {len(choice.train_rows)} train prompts; "
        f"estimated on {len(choice.held_out_rows)} held-out prompts",
        f"train: quality {choice.train_quality:.3f}, cost per 1k prompts {usd(choice.train_cost_per_1k)}",
        f"held-out: quality {interval(held.quality)}",
        f"held-out: cost per 1k prompts {interval(held.cost_per_1k, money=True)}",
    ]
    for tier, rate in zip(choice.policy.tiers[:-1], held.escalation_rate, strict=False):
        lines.append(f"held-out: escalation from {tier.model} {interval(rate, percent=True)}")
    if choice.reference_quality is not None and isinstance(choice.target, Match):
        train_q, held_q = choice.reference_quality
        lines.append(f"{choice.target.model} alone: quality {train_q:.3f} (train), {held_q:.3f} (held-out)")
    lines.append(choice.message if choice.meets_target_on_held_out else f"NOTE: {choice.message}")
    for r in choice.reliability:
        variant = "+refine" if r.refine else ""
        lines.append(
            f"reliability of {r.model}{variant} ({r.measure} -> P(correct), {r.n} held-out answers): "
            f"ECE {r.ece_before:.3f} raw, {r.ece_after:.3f} calibrated"
        )
    return lines


def target_text(target: MinQuality | MaxCostPer1k | Match) -> str:
    if isinstance(target, MinQuality):
        return f"quality >= {target.quality:g}"
    if isinstance(target, MaxCostPer1k):
        return f"cost <= ${target.usd:g} per 1k prompts"
    return f"{target.at:.0%} of {target.model} alone"


def estimates(choice: Choice, scorer: str, scorer_cut: float | None, job: str) -> dict[str, Any]:
    """The JSON stored with a policy version: target, train and held-out figures, ECE."""

    def iv(i: Interval) -> dict[str, float | None]:
        return {
            k: (None if math.isnan(v) else v)
            for k, v in (("value", i.value), ("low", i.low), ("high", i.high))
        }

    held = choice.held_out_intervals
    return {
        "calibration_job": job,
        "scorer": scorer,
        "scorer_cut": scorer_cut,
        "target": target_text(choice.target),
        "train": {"prompts": len(choice.train_rows), "quality": choice.train_quality,
                  "cost_per_1k_usd": choice.train_cost_per_1k},
        "held_out": {"prompts": len(choice.held_out_rows), "quality": iv(held.quality),
                     "cost_per_1k_usd": iv(held.cost_per_1k),
                     "escalation_rate": [iv(r) for r in held.escalation_rate]},
        "meets_target_on_held_out": choice.meets_target_on_held_out,
        "message": choice.message,
        "ece": [{"model": r.model, "refine": r.refine, "measure": r.measure, "before": r.ece_before,
                 "after": r.ece_after} for r in choice.reliability],
    }  # fmt: skip


def front_rows(points: SweepResult, limit: int = 15) -> list[tuple[float, float, str]]:
    """(cost per 1k, quality, summary) of the Pareto front, cheapest first, thinned to `limit` rows."""
    front = points.front()
    if len(front) > limit:
        front = front[np.linspace(0, len(front) - 1, limit).round().astype(int)]
    return [
        (float(points.cost_per_1k[i]), float(points.quality[i]), points.policy(int(i)).summary())
        for i in front
    ]


def plot_sweep(points: SweepResult, current: tuple[float, float, str] | None, title: str, path: Path) -> None:
    """Every swept policy (grey), the Pareto front (red) and the current policy (star), as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from herd.reporting.plot import save_png

    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(points.cost_per_1k, points.quality, s=4, color="0.75", label=f"{len(points)} policies")
    front = points.front()
    ax.step(
        points.cost_per_1k[front], points.quality[front], where="post", color="tab:red", label="Pareto front"
    )
    ax.scatter(points.cost_per_1k[front], points.quality[front], s=18, color="tab:red", zorder=3)
    for i in points.front()[:: max(1, len(front) // 6)]:
        label = points.policy(int(i)).summary()
        ax.annotate(label, (points.cost_per_1k[i], points.quality[i]), fontsize=7, xytext=(5, -10),
                    textcoords="offset points")  # fmt: skip
    if current is not None:
        ax.scatter([current[0]], [current[1]], marker="*", s=220, color="tab:blue", zorder=4,
                   label=f"current: {current[2]}")  # fmt: skip
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
