"""The demo's `herd calibrate` per task: a default target, the chosen policy recorded once, a router.

Target: 98% of the best single model's quality, at the lowest cost, promised at 90% confidence
(herd.policy.guarantee). A first-time user has no budget or quality figure in mind, and "as good as
the best model, for less" is the question the demo answers; quality per dollar alone would crown a
cheap model however poor it is. The best model is judged on the order part only (the prompts that
search and order the candidates), so the prompts that test them stay untouched. On the demo's few
dozen prompts a cheaper policy can rarely be promised: the demo then says so before running the
rest, runs the best model alone (which meets its own target by definition), and says how many
calibration prompts would likely let Herd promise a saving.

The router is trained on its own seeded 70% (as `herd router train` splits) with TF-IDF features,
the fallback that always works, at its default τ; it is only evaluated here, never served: the
cascade's policy is what the workers run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg

from herd.herdfile.model import HerdConfig
from herd.policy import calibration
from herd.policy import versions as policies
from herd.policy.calibrate import ORDER_FRACTION, Choice, Match, choose, split
from herd.policy.calibration import Loaded
from herd.policy.confidence import NothingToCalibrateError
from herd.policy.data import CalibrationData
from herd.policy.replay import replay
from herd.policy.router import Router, RouterError, RouterEval, evaluate, train_held_out
from herd.policy.spec import RAW_MEASURES, Policy
from herd.policy.workflow import estimates as version_estimates
from herd.reporting import policies as view

TRAIN_FRACTION = ORDER_FRACTION  # the share that searches and orders the policies
ROUTER_FRACTION = 0.7  # the router's own train split, as `herd router train` makes it
SEED = 0
AT = 0.98
CONFIDENCE = 0.9


@dataclass(frozen=True)
class TaskChoice:
    """`state`: 'recorded' (a new version), 'activated' (an earlier run's version, made active again)
    or 'reused' (an earlier run's version, still active). `router` is None when it cannot be trained
    (`router_note` says why)."""

    task: str
    loaded: Loaded
    best_alone: str
    choice: Choice
    version: int
    state: str
    router: Router | None
    router_held_out: RouterEval | None
    router_note: str = ""


def best_alone(data: CalibrationData, route: list[str], rows: np.ndarray) -> str:
    """The model with the best quality alone on `rows`; ties go to the cheaper."""
    train = data.take(rows)
    results = [replay(train, Policy.single(data.task, m)) for m in route]
    return min(zip(route, results, strict=True), key=lambda mr: (-mr[1].quality, mr[1].cost_per_1k))[0]


def prompt_texts(conn: psycopg.Connection, ids: np.ndarray) -> list[str]:
    """The prompts' document texts in the order of `ids` (the calibration data's rows)."""
    found = conn.execute("SELECT id, text FROM prompts WHERE id = ANY(%s)", (ids.tolist(),)).fetchall()
    texts: dict[int, str] = {int(r[0]): str(r[1]) for r in found}
    return [texts[int(i)] for i in ids]


def record_once(
    conn: psycopg.Connection, task: str, text: str, job_id: int, job: str, estimates: dict[str, object]
) -> tuple[int, str]:
    """The version holding `text` from calibration job `job`, made active; recorded only if no earlier
    run recorded it, so re-running the demo never piles up identical versions."""
    for v in reversed(policies.versions(conn, task)):
        if v.source_job == job and v.text == text:
            if v.active:
                return v.version, "reused"
            policies.activate(conn, task, v.version)
            return v.version, "activated"
    return policies.record(conn, task, text, job_id, estimates, activate=True), "recorded"


def choose_task(conn: psycopg.Connection, herd: HerdConfig, task: str, job: str) -> TaskChoice:
    """Load the scored calibration job, choose and record (or reuse) the policy, train the router.
    Commits. Raises InputError / UnknownJobError from herd.policy.calibration as `herd calibrate` does."""
    loaded = calibration.load(conn, herd, job, task)
    data, route = loaded.data, loaded.route
    train_rows, _ = split(data.n, TRAIN_FRACTION, SEED)  # the split `choose` makes below
    best = best_alone(data, route, train_rows)
    target = Match(best, AT)
    try:
        choice = choose(
            data,
            route,
            target,
            measures=(*RAW_MEASURES, "p_correct"),
            train_fraction=TRAIN_FRACTION,
            seed=SEED,
            confidence=CONFIDENCE,
        )
    except NothingToCalibrateError:  # no usable margin to calibrate P(correct) on: the raw measures
        choice = choose(data, route, target, train_fraction=TRAIN_FRACTION, seed=SEED, confidence=CONFIDENCE)
    estimates = version_estimates(choice, loaded.scorer, None, job)
    version, state = record_once(conn, task, choice.policy.to_text(), loaded.job_id, job, estimates)
    conn.commit()
    texts = prompt_texts(conn, data.prompt_ids)
    try:
        router, _, held = train_held_out(texts, data, ROUTER_FRACTION, SEED, models=route, features="tfidf")
    except RouterError as exc:
        return TaskChoice(task, loaded, best, choice, version, state, None, None, str(exc))
    held_eval = evaluate(router, [texts[int(i)] for i in held], data.take(held))
    return TaskChoice(task, loaded, best, choice, version, state, router, held_eval)


def _pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.1%}"


def _thin(c: Choice) -> str:
    thin = c.thin
    if thin is None:
        return ""
    if thin.prompts is None:
        return f"{thin.policy.summary()} looked as good here, but too close to call at any sample size."
    return (
        f"About {thin.prompts:,} calibration prompts would likely ({thin.power:.0%}) let Herd promise "
        f"{thin.policy.summary()} at {view.usd(thin.cost_per_1k)} per 1k prompts."
    )


def lines(tc: TaskChoice) -> list[str]:
    """What the demo prints for one task's choice: target, the policy, what it promises (or why it
    promises no saving, said before the rest runs), the test part's figures."""
    c, data = tc.choice, tc.loaded.data
    held = c.held_out_intervals
    q, cost = held.quality, held.cost_per_1k
    train_ref, held_ref = c.reference_quality or (float("nan"), float("nan"))
    n_train, n_held = len(c.train_rows), len(c.held_out_rows)
    state = {
        "recorded": "recorded as version {v}, active",
        "activated": "version {v}, recorded by an earlier run, active again",
        "reused": "version {v}, recorded by an earlier run, active",
    }[tc.state].format(v=tc.version)
    out = [
        f"{tc.task}: {data.n} calibration prompts x {len(tc.loaded.route)} models (scorer "
        f"{tc.loaded.scorer}): {n_train} search and order the policies, {n_held} test them",
        f"  target: {AT:.0%} of {tc.best_alone} alone (the best single model on the {n_train}: "
        f"{_pct(train_ref)}), at the lowest cost, promised at {CONFIDENCE:.0%} confidence",
        f"  chosen: {c.policy.summary()}; {state}",
    ]
    single = c.policy == Policy.single(c.policy.task, tc.best_alone)
    if c.guaranteed and single:
        out.append(
            f"  Too few prompts to promise a saving: no cheaper policy passed the test on the {n_held} "
            f"test prompts, so the demo runs {tc.best_alone} alone, which meets the target by definition."
        )
        if c.thin is not None:
            out.append("  " + _thin(c))
    elif c.guaranteed:
        bound = c.bound if c.bound is not None else float("nan")
        out.append(
            f"  Promised at {CONFIDENCE:.0%} confidence: on new documents like these its accuracy is at "
            f"least {AT:.0%} of {tc.best_alone}'s (lower bound of the difference {bound:+.3f})."
        )
    else:
        out.append(f"  No promise: {c.message}")
    out += [
        f"  test-part accuracy {_pct(q.value)} (95% CI {_pct(q.low)} to {_pct(q.high)}); "
        f"{tc.best_alone} alone {_pct(held_ref)}",
        f"  test-part cost {view.usd(cost.value)} per 1k prompts "
        f"(95% CI {view.usd(cost.low)} to {view.usd(cost.high)})",
    ]
    for tier, rate in zip(c.policy.tiers[:-1], held.escalation_rate, strict=False):
        out.append(f"  test-part escalation from {tier.model}: {view.interval(rate, percent=True)}")
    if tc.router is None or tc.router_held_out is None:
        out.append(f"  router (TF-IDF): not trained: {tc.router_note}")
    else:
        r = tc.router_held_out
        out.append(
            f"  router (TF-IDF, tau {tc.router.tau:g}), on its own 30% held out: accuracy "
            f"{_pct(r.router[0])}, {view.usd(r.router[1])} per 1k; oracle {_pct(r.oracle[0])}"
        )
    return out
