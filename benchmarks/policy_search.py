"""Time and peak memory of the policy search over a 9-model, 10,000-prompt synthetic calibration set
(every subset cheapest first, every measure and threshold per tier), beside today's sweep on the
same data in the same run.

    python -m benchmarks.policy_search [--prompts N] [--models N] [--baseline-timeout S] [--skip-refined]
        [--skip-unpruned]

Prints figures only (no asserts on speed); docs/benchmarks.md has the latest. Goal: N = 9 models and
10,000 prompts in under 10 s and under 1 GB.

1. Data: herd.policy.synthetic, seeded: N models with skills evenly from -0.5 to 2.5 and costs
   per attempt from $1e-7 to $3e-5 (a 1B model to a frontier one), 4 measures each; a second
   configuration adds refinement on/off per model (skipped with --skip-refined): on 9 models
   searched, by default, without the refinement variants another variant dominates on its own,
   beside the whole space as before (killed at --baseline-timeout); on the first 5 models, where
   the default searches the whole space, both, with how far the whole space's front is from the
   pruned one's (the whole space: skipped with --skip-unpruned).
2. Each search runs in a child process of its own (a fresh interpreter that generates the same data):
   wall and CPU time of the search alone (the machine is shared: CPU time is the steadier figure), and
   the child's peak resident memory (VmHWM) before and after it.
3. Today's sweep (herd.policy.sweep: contiguous sub-routes of the route, every point kept) on the
   same data: on all N models with a timeout (--baseline-timeout, then killed and its memory read
   as it stood), and on the first 5 models, where it finishes, beside the new search on those 5.
4. Exactness on the 5 models: every point of today's front is matched or beaten by the new front.
5. The guarantee on the new search: `choose` (Learn then Test) matching the best model at 98%.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from benchmarks._lib.cpu import peak_mib
from benchmarks._lib.entry import run
from benchmarks._lib.render import machine_state, table
from tests.support.harness import REPO

GOAL_S = 10.0
GOAL_MB = 1024.0


def herd_data(models: int, prompts: int, refined: bool):  # type: ignore[no-untyped-def]
    """The synthetic calibration set: models m0 (cheapest, weakest) .. m{N-1}."""
    from herd.policy.synthetic import synthetic

    names = tuple(f"m{i}" for i in range(models))
    skills = tuple(float(s) for s in np.linspace(-0.5, 2.5, models))
    usd = tuple(float(u) for u in np.geomspace(1e-7, 3e-5, models))
    return synthetic(prompts, models=names, skills=skills, usd=usd, refined=refined, seed=0)


def child(kind: str, models: int, prompts: int, refined: bool, route_models: int, prune: bool | None) -> None:
    """Run one search in this (fresh) process and print its figures as one JSON line."""
    from herd.policy.search import search
    from herd.policy.sweep import sweep

    data = herd_data(models, prompts, refined)
    route = data.models[:route_models]
    before = peak_mib()
    started, cpu = time.perf_counter(), time.process_time()
    if kind == "search":
        found = search(data, route, prune_refinement=prune)
        front = np.column_stack([found.cost_per_1k, found.quality])
        searched, tiers = found.searched, int(found.n_tiers.max())
    else:
        swept = sweep(data, route)
        index = swept.front()
        front = np.column_stack([swept.cost_per_1k[index], swept.quality[index]])
        searched, tiers = len(swept), int(swept.n_tiers[index].max())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    figures = {
        "seconds": seconds,
        "cpu": cpu,
        "before_mb": before,
        "peak_mb": peak_mib(),
        "searched": searched,
        "front": front.tolist(),
        "deepest": tiers,
    }
    print(json.dumps(figures), flush=True)


@dataclass(frozen=True)
class Run:
    label: str
    seconds: float | None  # None: killed at the timeout
    cpu: float
    before_mb: float
    peak_mb: float
    searched: int
    front: np.ndarray
    deepest: int


def measure(
    label: str,
    kind: str,
    models: int,
    prompts: int,
    refined: bool,
    route: int,
    timeout: float,
    prune: bool | None = None,
) -> Run:
    """One search in a child process; killed after `timeout` seconds (its peak memory read first)."""
    argv = [
        sys.executable,
        "-m",
        "benchmarks.policy_search",
        "--child",
        kind,
        "--models",
        str(models),
        "--prompts",
        str(prompts),
        "--route",
        str(route),
    ]
    argv += ["--refined"] if refined else []
    argv += {None: [], True: ["--prune"], False: ["--no-prune"]}[prune]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        peak = peak_mib(proc.pid)
        proc.kill()
        proc.communicate()
        return Run(label, None, float("nan"), float("nan"), peak, 0, np.empty((0, 2)), 0)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{label}: the child exited with {proc.returncode} after {time.monotonic() - started:.0f} s"
        )
    f = json.loads(out.strip().splitlines()[-1])
    return Run(
        label,
        f["seconds"],
        f["cpu"],
        f["before_mb"],
        f["peak_mb"],
        f["searched"],
        np.array(f["front"]),
        f["deepest"],
    )


def shortfall(old: np.ndarray, new: np.ndarray) -> float:
    """The largest quality by which a point of `old` beats every point of `new` costing no more (<= 0:
    `new` matches or beats every point of `old`)."""
    worst = -np.inf
    for cost, quality in old:
        cheaper = new[:, 0] <= cost * (1 + 1e-12) + 1e-15
        best = new[cheaper, 1].max() if cheaper.any() else -np.inf
        worst = max(worst, quality - best)
    return float(worst)


def row(r: Run, timeout: float) -> list[str]:
    if r.seconds is None:
        return [r.label, f"killed at {timeout:.0f} s", "-", "-", f">= {r.peak_mb:,.0f}", "-", "-", "-"]
    goal = "met" if r.seconds < GOAL_S and r.peak_mb < GOAL_MB else "MISSED"
    grew = r.peak_mb - r.before_mb
    return [
        r.label,
        f"{r.seconds:.2f}",
        f"{r.cpu:.2f}",
        f"{r.searched:,}",
        f"{r.peak_mb:,.0f}",
        f"{grew:,.0f}",
        f"{len(r.front):,} (deepest {r.deepest} tiers)",
        goal,
    ]


def guarantee_line(models: int, prompts: int) -> str:
    from herd.policy.calibrate import Match, choose
    from herd.policy.replay import replay
    from herd.policy.spec import Policy

    data = herd_data(models, prompts, refined=False)
    best = max(data.models, key=lambda m: replay(data, Policy.single(data.task, m)).quality)
    started = time.perf_counter()
    choice = choose(data, data.models, Match(best, 0.98), advise=False)
    seconds = time.perf_counter() - started
    return (
        f"choose(Match({best}, 0.98), guarantee at 90%) over {models} models, {prompts:,} prompts: "
        f"{seconds:.1f} s (search on {len(choice.train_rows):,} prompts, {choice.searched:,} policies; "
        f"{choice.tested} of {choice.candidates} candidates tested on {len(choice.held_out_rows):,})\n"
        f"  -> {choice.policy.summary()}\n  {choice.message}"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.policy_search", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--prompts", type=int, default=10_000)
    p.add_argument("--models", type=int, default=9)
    p.add_argument(
        "--baseline-timeout", type=float, default=300.0, help="Seconds before today's sweep is killed."
    )
    p.add_argument("--skip-refined", action="store_true", help="Only the configuration without refinement.")
    p.add_argument(
        "--skip-unpruned", action="store_true", help="Refinement: no search of the whole, unpruned space."
    )
    p.add_argument("--child", choices=["search", "sweep"], help=argparse.SUPPRESS)
    p.add_argument("--route", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--refined", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prune", action="store_true", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-prune", action="store_false", dest="prune", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    n, m, timeout = args.prompts, args.models, args.baseline_timeout
    if args.child:
        child(args.child, m, n, args.refined, args.route or m, args.prune)
        return 0
    print(f"{machine_state()}; numpy {np.__version__}")
    small = min(5, m)
    runs = [
        measure(f"search, {m} models", "search", m, n, False, m, 3600),
        measure(f"today's sweep, {m} models", "sweep", m, n, False, m, timeout),
        measure(f"search, {small} models", "search", m, n, False, small, 3600),
        measure(f"today's sweep, {small} models", "sweep", m, n, False, small, timeout),
    ]
    refined: list[Run] = []
    if not args.skip_refined:
        refined.append(measure(f"search, {m} models, refinement on/off", "search", m, n, True, m, 3600))
    if not args.skip_refined and not args.skip_unpruned:
        refined += [
            measure(f"  the whole space, {m} models", "search", m, n, True, m, timeout, prune=False),
            measure(f"search, {small} models, refinement, pruned", "search", m, n, True, small, 3600, True),
            measure(
                f"  the whole space (the default), {small} models", "search", m, n, True, small, 3600, False
            ),
        ]
    runs += refined
    headers = [
        "",
        "seconds",
        "CPU s",
        "policies",
        "peak MiB",
        "of it, search",
        "front",
        f"< {GOAL_S:.0f} s, < 1 GiB",
    ]
    print(f"\n== {n:,} prompts, 4 measures per model; each run in a fresh child process ==")
    print(table(headers, [row(r, timeout) for r in runs]))
    old, new = runs[3], runs[2]
    if old.seconds is not None:
        print(
            f"\nexactness on {small} models: the largest quality by which a point of today's front beats "
            f"the new front at no more cost: {shortfall(old.front, new.front):.2e} (<= 0: matched or beaten)"
        )
    for whole, pruned, size in ((1, 0, m), (3, 2, small)) if len(refined) == 4 else ():
        if refined[whole].seconds is not None:
            gap = shortfall(refined[whole].front, refined[pruned].front)
            print(
                f"refinement on {size} models: the largest quality by which a point of the whole space's "
                f"front beats the pruned front at no more cost: {gap:.2e}"
            )
    print(guarantee_line(m, n), flush=True)
    return 0


if __name__ == "__main__":
    run(main)
