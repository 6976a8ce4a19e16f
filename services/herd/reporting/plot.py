"""`herd report --plot`: refined quality against cost per 1k prompts, with the Pareto front (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from herd.files import atomic_path

if TYPE_CHECKING:  # only for the annotation: build.py imports this module (via reporting.audit)
    from herd.reporting.build import Report


def save_png(fig: Any, ax: Any, path: Path, *, title: str, xlabel: str, ylabel: str, legend: bool) -> None:
    """Label `ax`, lay `fig` out and write it to `path` as a 120-dpi PNG, atomically (a reader never
    sees half a file; a failed write leaves any earlier plot in place). Every Herd plot ends here."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, format="png", dpi=120)


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The (cost, quality, label) points no other point beats on both: cheaper-or-equal and better."""
    front: list[tuple[float, float, str]] = []
    for cost, quality, label in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or quality > front[-1][1]:
            front.append((cost, quality, label))
    return front


def plot(report: Report, path: Path) -> None:
    """Refined quality against cost per 1k prompts, each model and policy labelled, Pareto front."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - matplotlib is slow to import: only when a plot is drawn
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a plot is drawn
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415 - matplotlib only when a plot is drawn

    # Policies that coincide ('small-only' is often exactly 'small') share one point and one label.
    labels: dict[tuple[float, float], list[str]] = {}
    kinds: dict[tuple[float, float], str] = {}
    for r in report.rows:
        if r.quality_refined is not None:
            xy = (float(r.cost_per_1k_prompts_usd), r.quality_refined)
            labels.setdefault(xy, []).append(report.long_label(r))
            kinds.setdefault(xy, r.kind)
    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no global pyplot state
    ax = fig.add_subplot()
    for kind, marker, name in (
        ("model", "o", "model"),
        ("cascade", "D", "policy"),
        ("counterfactual", "D", ""),
    ):
        xys = [xy for xy, k in kinds.items() if k == kind]
        if xys:
            ax.scatter(*zip(*xys, strict=True), marker=marker, color="tab:blue", zorder=2, label=name or None)
    for (cost, quality), names in labels.items():
        ax.annotate(", ".join(names), (cost, quality), textcoords="offset points", xytext=(7, 5), fontsize=9)
    if labels:
        front = pareto_front([(x, y, "") for x, y in labels])
        xs, ys = [p[0] for p in front], [p[1] for p in front]
        ax.step(xs, ys, where="post", color="tab:red", label="Pareto front", zorder=1)
        ax.scatter(xs, ys, s=130, facecolors="none", edgecolors="tab:red", linewidths=1.5, zorder=3)
        costs = [x for x, _ in labels]
        # Costs often span orders of magnitude; a log axis matches PeRFICS' log2 cost term.
        if min(costs) > 0 and max(costs) / min(costs) >= 10:
            ax.set_xscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.2, not 2 x 10^-1
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no quality scores (run `herd score`)", ha="center", transform=ax.transAxes)
    save_png(
        fig,
        ax,
        path,
        title=f"Herd job {report.summary.job}: quality vs cost",
        xlabel="cost per 1k prompts (USD, attributed)",
        ylabel=f"quality, refined ({report.scorer or 'no scorer'})",
        legend=False,
    )
