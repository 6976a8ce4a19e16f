"""`herd router train/eval/list/activate/deactivate` (docs/policy.md, "Router").

Train and eval read a calibration job's attempts and its prompts' texts (herd/policy/calibration.py,
herd/policy/router/versions.py): no model call. Every bad argument is one `error: ...` line with exit
status 2, raised before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from herd.cli.app import console, herd_config, main
from herd.cli.versions import add_activation
from herd.input_errors import InputError
from herd.output import out

if TYPE_CHECKING:
    from herd.herdfile.model import HerdConfig


def _target(
    herd: HerdConfig, min_quality: float | None, max_cost: float | None, match: str | None, at: float
) -> Any:
    from herd.policy.calibrate import Match, MaxCostPer1k, MinQuality

    given = [t for t in (min_quality, max_cost, match) if t is not None]
    if len(given) > 1:
        raise InputError("give at most one target: --min-quality Q, --max-cost-per-1k USD or --match MODEL")
    if min_quality is not None:
        return MinQuality(min_quality)
    if max_cost is not None:
        return MaxCostPer1k(max_cost)
    if match is not None:
        if match not in herd.models:
            raise InputError(f"unknown model {match!r}; the herd file defines: {', '.join(herd.models)}")
        return Match(match, at)
    return None


@main.group()
def router() -> None:
    """Per-prompt routers learned from a calibration job: train, eval, list, activate."""


@router.command()
@click.argument("job")
@click.option("--task", required=True, help="Task the calibration job ran.")
@click.option(
    "--features",
    type=click.Choice(["tfidf", "tfidf-char", "minilm"]),
    default="tfidf",
    show_default=True,
    help="TF-IDF words, TF-IDF characters, or the MiniLM encoder.",
)
@click.option("--cut", type=float, default=0.5, show_default=True, help="An answer scoring >= CUT is good.")
@click.option("--models", help="Comma-separated models to route between (default: the task's route).")
@click.option("--min-quality", type=float, help="Target: the cheapest tau with at least this accuracy.")
@click.option("--max-cost-per-1k", type=float, help="Target: the most accurate tau within USD per 1k.")
@click.option(
    "--match", "match_model", help="Target: the cheapest tau reaching --at x this model's accuracy."
)
@click.option("--at", type=float, default=0.98, show_default=True, help="Share of --match's accuracy.")
@click.option("--tau", type=float, default=0.5, show_default=True, help="Tau when no target is given.")
@click.option("--scorer", help="Scorer behind good/bad (default: the job's first by name).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/held-out split.")
@click.option("--train-fraction", type=float, default=0.7, show_default=True)
@click.option(
    "--activate/--no-activate",
    default=True,
    show_default=True,
    help="Make the new version the one `herd submit` routes with.",
)
@click.option(
    "--allow-non-answers",
    is_flag=True,
    help="Train even when over 10% of the prompts lack an answer from some model.",
)
@click.pass_context
def train(
    ctx: click.Context,
    job: str,
    task: str,
    features: str,
    cut: float,
    models: str | None,
    min_quality: float | None,
    max_cost_per_1k: float | None,
    match_model: str | None,
    at: float,
    tau: float,
    scorer: str | None,
    seed: int,
    train_fraction: float,
    activate: bool,
    allow_non_answers: bool = False,
) -> None:
    """Train a router on a calibration job's train split, report held-out figures, record a version."""
    import psycopg

    from herd.policy.calibrate import target_text
    from herd.policy.router.versions import encoder_name
    from herd.policy.router.workflow import TrainOptions, train_version
    from herd.reporting import routers as view
    from herd.reporting.policies import usd
    from herd.urls import database_url

    herd = herd_config(ctx)
    target = _target(herd, min_quality, max_cost_per_1k, match_model, at)
    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    options = TrainOptions(
        features, cut, chosen, target, tau, scorer, seed, train_fraction, activate, allow_non_answers
    )
    with psycopg.connect(database_url()) as conn:
        trained = train_version(conn, herd, job, task, options)
    loaded, fitted, picked = trained.loaded, trained.router, trained.picked
    if loaded.unanswered:
        out.print(loaded.non_answer_text(), markup=False)
    out.print(
        f"router for task {task} from calibration job {job} (scorer {loaded.scorer}, good: score >= {cut}): "
        f"{encoder_name(fitted)} features, {len(trained.models)} models ({', '.join(trained.models)}), "
        f"{trained.n_train} train / {trained.n_held} held-out prompts",
        markup=False,
    )
    if picked is not None and target is not None:
        out.print(
            f"target {target_text(target)}: tau {picked.tau:.2f} (train, {trained.tau_from}: accuracy "
            f"{picked.accuracy:.3f}, {usd(picked.cost_per_1k)} per 1k"
            + (f"; {match_model} alone {picked.reference:.3f}" if picked.reference is not None else "")
            + ")",
            markup=False,
        )
    for line in view.eval_lines(trained.held_out, fitted):
        out.print(line, markup=False)
    if target is not None:
        out.print(view.verdict(target, trained.held_out), markup=False)
    state = (
        "active: `herd submit` routes with it"
        if activate
        else (f"not active: `herd router activate {trained.version} --task {task}`")
    )
    out.print(f"recorded as router version {trained.version} of task {task} ({state})", markup=False)


@router.command("eval")
@click.argument("version", type=int, required=False)
@click.option("--task", required=True)
@click.option("--job", help="Calibration job to evaluate on (default: the one the router was trained on).")
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG: the router's quality-cost curve beside the cascade's policies.",
)
@click.pass_context
def eval_(
    ctx: click.Context, version: int | None, task: str, job: str | None, plot_file: Path | None
) -> None:
    """Held-out accuracy against each model alone and the oracle, APGR, CPT(50%), the Herd figure."""
    import psycopg

    from herd.cascade.routed import entry_policies
    from herd.policy import calibration
    from herd.policy.active import load_active
    from herd.policy.router import evaluate, replay_routed
    from herd.policy.router import versions as routers
    from herd.policy.search import search
    from herd.reporting import routers as view
    from herd.reporting.policies import usd
    from herd.urls import database_url

    herd = herd_config(ctx)
    with psycopg.connect(database_url()) as conn:
        v = routers.get(conn, task, version)
        fitted = v.router()
        job = job or v.source_job
        if job is None:
            raise InputError(f"router v{v.version}'s calibration job is gone: give --job CALIBRATION_JOB")
        loaded = calibration.load(conn, herd, job, task, v.figures.get("scorer"))
        held, texts, choice, _ = _unseen(conn, v, fitted, loaded.data, job, "nothing held out")
        ev = evaluate(fitted, texts, held)
        policies = entry_policies(herd, task, fitted.models, load_active(conn, task))
        composed = replay_routed(held, choice, policies, fitted.cut)
    if loaded.unanswered:
        out.print(loaded.non_answer_text(), markup=False)
    out.print(
        f"router v{v.version} of task {task} ({v.encoder}, tau {fitted.tau:.2f}, "
        f"good: score >= {fitted.cut}) on {held.n} held-out prompts of {job} (scorer {loaded.scorer})",
        markup=False,
    )
    for line in view.eval_lines(ev, fitted):
        out.print(line, markup=False)
    out.print(
        "router -> cascade (the active policy or herd file from each entry): "
        f"accuracy {composed.quality:.3f}, "
        f"{usd(composed.cost_per_1k)} per 1k",
        markup=False,
    )
    if plot_file is not None:
        cascade = search(held, loaded.route, scorer_cut=fitted.cut)
        title = f"{job} (task {task}): router v{v.version} vs cascade, {held.n} held-out prompts"
        view.plot_router(ev, fitted, cascade, (composed.quality, composed.cost_per_1k), title, plot_file)
        console.print(f"plot written to {plot_file}", markup=False, soft_wrap=True)


@router.command("list")
@click.option("--task", help="Only this task.")
def list_(task: str | None) -> None:
    """Every router version: task, version, when, from which job, features, tau, held-out accuracy."""
    import psycopg

    from herd.policy.router import versions as routers
    from herd.urls import database_url

    with psycopg.connect(database_url()) as conn:
        rows = routers.versions(conn, task)
    if not rows:
        out.print("no router versions (run `herd router train`)", markup=False)
    for v in rows:
        held = v.figures.get("held_out") or {}
        acc = (held.get("router") or {}).get("accuracy")
        oracle = (held.get("oracle") or {}).get("accuracy")
        figures = f"held-out accuracy {acc:.3f} (oracle {oracle:.3f})" if acc is not None else "-"
        out.print(
            f"{'*' if v.active else ' '} {v.task} v{v.version}  {v.created_at:%Y-%m-%d %H:%M}  "
            f"from {v.source_job or '-'}  {v.encoder}  tau {v.figures.get('tau', float('nan')):.2f}  "
            f"{figures}",
            markup=False,
        )


add_activation(
    router,
    store="herd.policy.router.versions",
    kind="router",
    activate_help="Make VERSION the router `herd submit` uses for TASK (an earlier one: rollback).",
    deactivate_help="No router for TASK: every prompt enters at the policy's (or herd file's) entry model.",
    active="task {task}: router version {version} is active",
    deactivated="task {task}: no router now",
    none_active="task {task}: no router was active",
)


def _unseen(
    conn: Any, v: Any, fitted: Any, data: Any, job: str, nothing: str
) -> tuple[Any, list[str], Any, set[int]]:
    """The prompts of calibration job `job` that router version `v` did not train on (all of them when
    `job` is not its training job): (their CalibrationData, their texts, the model the router picks
    for each as an object array, the training prompt ids left out). InputError naming `job` and
    ending in `nothing` when every prompt trained it."""
    import numpy as np

    from herd.policy.router import versions as routers

    trained_on = set(v.figures.get("train_prompt_ids", [])) if job == v.source_job else set()
    rows = np.array([i for i, p in enumerate(data.prompt_ids) if int(p) not in trained_on])
    if rows.size == 0:
        raise InputError(f"every prompt of {job!r} trained router v{v.version}: {nothing}")
    unseen = data.take(rows)
    texts = routers.prompt_texts(conn, unseen.prompt_ids)
    return unseen, texts, np.asarray(fitted.models, dtype=object)[fitted.route(texts)], trained_on


def replay_with_router(
    conn: Any, herd: HerdConfig, loaded: Any, router_version: str, active: Any, source: str
) -> list[str]:
    """`herd replay JOB --task T --router [VERSION]`: router → entry model → the cascade from there
    (`active`: (version, policy) the prompts follow, None: the herd file), replayed on the calibration
    job (its held-out prompts when it is the router's own training job). Lines to print."""
    from herd.cascade.routed import entry_policies
    from herd.policy.router import replay_routed
    from herd.policy.router import versions as routers
    from herd.reporting import routers as view

    if router_version != "active" and not router_version.isdigit():
        raise InputError(f"--router takes a version number, got {router_version!r}")
    task = loaded.data.task
    v = routers.get(conn, task, None if router_version == "active" else int(router_version))
    fitted = v.router()
    job_name = conn.execute("SELECT name FROM jobs WHERE id = %s", (loaded.job_id,)).fetchone()[0]
    data, _, choice, trained_on = _unseen(conn, v, fitted, loaded.data, job_name, "nothing to replay")
    policies = entry_policies(herd, task, fitted.models, active)
    routed = replay_routed(data, choice, policies, fitted.cut)
    which = "held-out prompts (the rest trained it)" if trained_on else "prompts"
    head = [
        f"router v{v.version} ({v.encoder}, tau {fitted.tau:.2f}) on {data.n} {which}, then {source} "
        f"from each entry; good: score >= {fitted.cut}"
    ]
    return head + view.routed_lines(routed, {m: p.summary() for m, p in policies.items()})
