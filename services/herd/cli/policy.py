"""`herd replay`, `herd calibrate` and `herd policy list/show/diff/activate/deactivate` (docs/policy.md).

Replay and calibrate read a calibration job's attempts only (herd/policy/calibration.py): no model
call. Every bad argument is one `error: ...` line with exit status 2, raised before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from herd.cli.app import console, herd_config, main
from herd.cli.versions import add_activation
from herd.input_errors import InputError
from herd.output import out


def _print(lines: list[str]) -> None:
    for line in lines:
        out.print(line, markup=False)


@main.command()
@click.argument("job")
@click.option("--task", required=True, help="Task the calibration job ran.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy text (YAML, as `herd policy show` prints). Default: the current policy.",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Search every policy (any subset of the models, cheapest first; every measure, threshold and "
    "refinement setting): the exact Pareto front of quality and cost.",
)
@click.option("--scorer", help="Scorer behind quality (default: the job's first by name).")
@click.option(
    "--scorer-cut", type=float, help="Count a score >= CUT as correct (accuracy) instead of the mean."
)
@click.option(
    "--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), help="PNG of the sweep."
)
@click.option("--resamples", type=int, default=1000, show_default=True, help="Bootstrap resamples.")
@click.option(
    "--router",
    "router_version",
    is_flag=False,
    flag_value="active",
    metavar="[VERSION]",
    help="Route each prompt with the active (or VERSION) router, then run the policy from its entry.",
)
@click.pass_context
def replay(
    ctx: click.Context,
    job: str,
    task: str,
    policy_file: Path | None,
    sweep: bool,
    scorer: str | None,
    scorer_cut: float | None,
    plot_file: Path | None,
    resamples: int,
    router_version: str | None = None,
) -> None:
    """Quality, cost per 1k prompts and escalation of any policy, from a calibration job's attempts."""
    import psycopg

    from herd.policy import calibration
    from herd.policy.active import herd_policy, load_active
    from herd.policy.calibration import MAX_NON_ANSWER_SHARE
    from herd.policy.replay import bootstrap
    from herd.policy.replay import replay as do_replay
    from herd.policy.search import search
    from herd.policy.spec import Policy
    from herd.reporting import policies as view
    from herd.urls import database_url

    herd = herd_config(ctx)
    if policy_file is not None and sweep:
        raise InputError("give either --policy FILE or --sweep, not both")
    if plot_file is not None and not sweep:
        raise InputError("--plot draws the sweep: add --sweep")
    with psycopg.connect(database_url()) as conn:
        loaded = calibration.load(conn, herd, job, task, scorer)
        active = load_active(conn, task)
        if policy_file is not None:
            try:
                policy = Policy.from_text(policy_file.read_text(encoding="utf-8"))
            except OSError as exc:
                raise InputError(f"{policy_file}: {exc.strerror}") from None
            source = str(policy_file)
        elif active is not None:
            policy, source = active[1], f"active version {active[0]}"
        else:
            policy, source = herd_policy(herd, task), "the herd file"
        if policy.task != task:
            raise InputError(f"the policy is for task {policy.task!r}, not {task!r}")
        data = loaded.data
        routed_lines = None
        if router_version is not None:  # resolved before any output: an error stays one line
            from herd.cli.router import replay_with_router

            if sweep:
                raise InputError("--router replays the routed policy: drop --sweep")
            pinned = (0, policy) if policy_file is not None else active
            routed_lines = replay_with_router(conn, herd, loaded, router_version, pinned, source)
        out.print(
            f"calibration job {job} (task {task}): {data.n} prompts x {len(loaded.route)} models "
            f"({' -> '.join(loaded.route)}), scorer {loaded.scorer}"
            + (f", {loaded.left_out} prompts left out (unfinished or unscored)" if loaded.left_out else ""),
            markup=False,
        )
        if loaded.unanswered:
            over = loaded.unanswered_share > MAX_NON_ANSWER_SHARE
            flag = " (WARNING: over 10% of the sample)" if over else ""
            out.print(loaded.non_answer_text() + flag, markup=False)
        if routed_lines is not None:
            _print(routed_lines)
            return
        result = do_replay(data, policy, scorer_cut)
        if not sweep:
            out.print(f"policy ({source}): {policy.summary()}", markup=False)
            _print(view.replay_lines(result, bootstrap(result, n_resamples=resamples)))
            return
        points = search(data, loaded.route, scorer_cut=scorer_cut)
    current = (result.cost_per_1k, result.quality, f"{policy.summary()} ({source})")
    out.print(
        f"searched {points.searched:,} policies ({points.families:,} model sequences with their tier "
        f"options); Pareto front, {len(points)} policies (cheapest first):",
        markup=False,
    )
    for cost, quality, summary in view.front_rows(points):
        out.print(f"  {view.usd(cost):>12} per 1k  quality {quality:.3f}  {summary}", markup=False)
    out.print(
        f"current policy ({source}): {view.usd(result.cost_per_1k)} per 1k, quality {result.quality:.3f}: "
        f"{policy.summary()}",
        markup=False,
    )
    if plot_file is not None:
        view.plot_sweep(points, current, f"{job} (task {task}): replayed policies", plot_file)
        console.print(f"plot written to {plot_file}", markup=False, soft_wrap=True)


@main.command()
@click.argument("job")
@click.option("--task", required=True, help="Task the calibration job ran.")
@click.option("--min-quality", type=float, help="Target: the cheapest policy with at least this quality.")
@click.option(
    "--max-cost-per-1k", type=float, help="Target: the best policy costing at most USD per 1k prompts."
)
@click.option(
    "--match", "match_model", help="Target: the cheapest policy reaching --at x this model's quality."
)
@click.option("--at", type=float, default=0.98, show_default=True, help="Share of --match's quality.")
@click.option(
    "--method",
    type=click.Choice(["guarantee", "point"]),
    default="guarantee",
    show_default=True,
    help="guarantee: the cheapest policy that meets the target with probability >= --confidence "
    "(Learn then Test); point: the cheapest by its point estimate on a train split, no guarantee.",
)
@click.option("--confidence", type=float, default=0.9, show_default=True, help="Confidence of the guarantee.")
@click.option("--scorer", help="Scorer behind quality (default: the job's first by name).")
@click.option(
    "--scorer-cut", type=float, help="Count a score >= CUT as correct (accuracy) instead of the mean."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split (and test order).")
@click.option(
    "--train-fraction",
    type=float,
    help="Share of the prompts that search (and order) the policies. Default: 0.3 (guarantee), 0.7 (point).",
)
@click.option(
    "--p-correct/--no-p-correct",
    default=True,
    show_default=True,
    help="Also search thresholds on calibrated P(correct) (isotonic maps of the first-token margin).",
)
@click.option(
    "--activate/--no-activate",
    default=True,
    show_default=True,
    help="Make the new version the one workers run.",
)
@click.option(
    "--activate-anyway",
    is_flag=True,
    help="Record (and activate) the policy even when its guarantee failed or its held-out estimate "
    "missed the target.",
)
@click.option(
    "--allow-non-answers",
    is_flag=True,
    help="Calibrate even when more than 10% of the prompts lack an answer from some model "
    "(errors, timeouts, empty or cut-off answers); they are left out either way.",
)
@click.option(
    "--from-audit",
    is_flag=True,
    help="JOB is an audited live job: choose on its audit sample between its entry model and the "
    "audit's reference (threshold and measure of the entry); scored by accuracy where references "
    "exist, else by agreement with the reference (docs/policy.md).",
)
@click.pass_context
def calibrate(
    ctx: click.Context,
    job: str,
    task: str,
    min_quality: float | None,
    max_cost_per_1k: float | None,
    match_model: str | None,
    at: float,
    method: str,
    confidence: float,
    scorer: str | None,
    scorer_cut: float | None,
    seed: int,
    train_fraction: float | None,
    p_correct: bool,
    activate: bool,
    activate_anyway: bool,
    allow_non_answers: bool,
    from_audit: bool,
) -> None:
    """Choose the policy that meets a target on a calibration job, and record it as a new version.

    By default the choice carries a guarantee: with probability >= --confidence, the policy's quality
    on new prompts drawn like the calibration sample meets the target (docs/policy.md). A choice
    without one is not recorded unless --activate-anyway."""
    import psycopg

    from herd.policy.calibrate import Match, MaxCostPer1k, MinQuality, Target, target_text
    from herd.policy.workflow import CalibrateOptions, calibrate_version
    from herd.reporting import policies as view
    from herd.urls import database_url

    herd = herd_config(ctx)
    given = [t for t in (min_quality, max_cost_per_1k, match_model) if t is not None]
    if len(given) != 1:
        raise InputError("give exactly one target: --min-quality Q, --max-cost-per-1k USD or --match MODEL")
    target: Target
    if min_quality is not None:
        target = MinQuality(min_quality)
    elif max_cost_per_1k is not None:
        target = MaxCostPer1k(max_cost_per_1k)
    else:
        if match_model not in herd.models:
            raise InputError(
                f"unknown model {match_model!r}; the herd file defines: {', '.join(herd.models)}"
            )
        target = Match(str(match_model), at)
    options = CalibrateOptions(
        method,
        confidence,
        scorer,
        scorer_cut,
        seed,
        train_fraction,
        p_correct,
        activate,
        activate_anyway,
        allow_non_answers,
        from_audit,
    )
    with psycopg.connect(database_url()) as conn:
        calibrated = calibrate_version(conn, herd, job, task, target, options)
    loaded, choice, text, version = calibrated.loaded, calibrated.choice, calibrated.text, calibrated.version
    if loaded.unanswered:
        out.print(loaded.non_answer_text(), markup=False)
    out.print(f"target: {target_text(target)} (scorer {loaded.scorer}); chosen policy:", markup=False)
    out.print(text.rstrip(), markup=False)
    _print(view.choice_lines(choice))
    if version is None:
        why = "its guarantee failed" if choice.method == "guarantee" else "it missed the target on held-out"
        out.print(
            f"not recorded: {why}. Calibrate on more prompts, or re-run with --activate-anyway to record "
            "it all the same.",
            markup=False,
        )
        ctx.exit(1)
    state = "active" if activate else f"not active: `herd policy activate {version} --task {task}`"
    back = f"; roll back with `herd policy activate {version - 1} --task {task}`" if version > 1 else ""
    out.print(
        f"recorded as version {version} of task {task} ({state}{back if activate else ''})", markup=False
    )


@main.group()
def policy() -> None:
    """Policy versions recorded by `herd calibrate`: list, show, diff, activate (rollback)."""


@policy.command("list")
@click.option("--task", help="Only this task.")
def list_(task: str | None) -> None:
    """Every version: task, version, when, from which job, held-out estimate, target, guarantee."""
    import psycopg

    from herd.policy import versions as policies
    from herd.reporting import policies as view
    from herd.urls import database_url

    with psycopg.connect(database_url()) as conn:
        rows = policies.versions(conn, task)
    if not rows:
        out.print("no policy versions (run `herd calibrate`)", markup=False)
    for v in rows:
        held = v.estimates.get("held_out", {})
        quality = (held.get("quality") or {}).get("value")
        cost = (held.get("cost_per_1k_usd") or {}).get("value")
        figures = f"held-out quality {quality:.3f}, ${cost:.6g}/1k" if quality is not None else "-"
        mark = "*" if v.active else " "
        out.print(
            f"{mark} {v.task} v{v.version}  {v.created_at:%Y-%m-%d %H:%M}  from {v.source_job or '-'}  "
            f"{figures}  target {v.estimates.get('target', '-')}  {view.promise_text(v.estimates)}",
            markup=False,
        )


@policy.command()
@click.argument("version", type=int)
@click.option("--task", required=True)
def show(version: int, task: str) -> None:
    """The policy text of a version (pasteable into `herd replay --policy`)."""
    import psycopg

    from herd.policy import versions as policies
    from herd.urls import database_url

    with psycopg.connect(database_url()) as conn:
        v = policies.get(conn, task, version)
    out.print(f"# task {v.task} version {v.version}{' (active)' if v.active else ''}", markup=False)
    out.print(v.text.rstrip(), markup=False)


@policy.command()
@click.argument("old", type=int)
@click.argument("new", type=int)
@click.option("--task", required=True)
def diff(old: int, new: int, task: str) -> None:
    """Unified diff of two versions' texts."""
    import difflib

    import psycopg

    from herd.policy import versions as policies
    from herd.urls import database_url

    with psycopg.connect(database_url()) as conn:
        a, b = policies.get(conn, task, old), policies.get(conn, task, new)
    lines = difflib.unified_diff(
        a.text.splitlines(), b.text.splitlines(), f"{task} v{old}", f"{task} v{new}", lineterm=""
    )
    _print(list(lines) or [f"versions {old} and {new} are the same policy"])


add_activation(
    policy,
    store="herd.policy.versions",
    kind="policy",
    activate_help=(
        "Make VERSION the one workers run (an earlier one: rollback). Workers pick it up within 30 s."
    ),
    deactivate_help="Back to the herd file's cascade for TASK.",
    active="task {task}: version {version} is active",
    deactivated="task {task}: the herd file decides again",
    none_active="task {task}: no version was active",
)
