"""The demo's closing comparison, per task, on the rest of the set (prompts never used to choose).

Two sources, both on the same prompts:
- the live job: what the workers did under the chosen policy version (final answers scored, every
  attempt's attributed cost);
- the rest's calibration job, where every model answered every prompt: each model alone, the herd
  file's cascade, the chosen policy and the router replayed from those attempts (no model call), and
  the oracle (per prompt the cheapest model that is right, in hindsight: a ceiling, not a policy).
A replayed row and the live row of the same policy give the same answers (temperature 0); their
costs differ a little, since attributed cost is measured busy time on a shared CPU.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import psycopg
from rich.console import Console

from herd.herdfile.model import HerdConfig
from herd.local.demo.choose import AT, TaskChoice, prompt_texts
from herd.local.demo.output import say
from herd.policy import calibration
from herd.policy.active import herd_policy
from herd.policy.replay import replay
from herd.policy.router import oracle_choice, outcome, route_rule
from herd.policy.spec import Policy
from herd.reporting.policies import usd
from herd.reporting.tables import Column, print_table

LIVE, REPLAY = "live job", "replay"


@dataclass(frozen=True)
class Live:
    """The live job's figures: failed prompts and unscored finals count as wrong."""

    n: int
    correct: float
    cost_per_1k: float
    escalated: int  # prompts answered by more than one model
    failed: int
    versions: dict[int | None, int]  # policy version that decided -> prompts (None: the herd file)


@dataclass(frozen=True)
class Row:
    label: str
    accuracy: float
    n: int
    cost_per_1k: float
    source: str


@dataclass(frozen=True)
class Comparison:
    """`router_shares`: per model the share of the rest the router sent to it (None: no router)."""

    live: Live
    rows: list[Row]
    router_shares: dict[str, float] | None = None

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)


_LIVE = """
    WITH costs AS (
        SELECT prompt_id, sum(cost_usd) AS cost FROM attempt_costs WHERE job = %(job)s GROUP BY prompt_id
    ), reached AS (
        SELECT a.prompt_id, count(DISTINCT a.model) AS models
        FROM attempts a JOIN prompts p ON p.id = a.prompt_id JOIN jobs j ON j.id = p.job_id
        WHERE j.name = %(job)s GROUP BY a.prompt_id
    )
    SELECT p.state, p.policy_version, s.score, coalesce(c.cost, 0), coalesce(r.models, 0)
    FROM prompts p JOIN jobs j ON j.id = p.job_id
    LEFT JOIN finals f ON f.prompt_id = p.id
    LEFT JOIN scores s ON s.attempt_id = f.attempt_id AND s.scorer = %(scorer)s
    LEFT JOIN costs c ON c.prompt_id = p.id
    LEFT JOIN reached r ON r.prompt_id = p.id
    WHERE j.name = %(job)s"""


def live(conn: psycopg.Connection, job: str, scorer: str) -> Live:
    rows = conn.execute(_LIVE, {"job": job, "scorer": scorer}).fetchall()
    return Live(
        n=len(rows),
        correct=sum(float(r[2] or 0.0) for r in rows),
        cost_per_1k=1000.0 * sum(float(r[3]) for r in rows) / max(len(rows), 1),
        escalated=sum(1 for r in rows if r[4] > 1),
        failed=sum(1 for r in rows if r[0] == "failed"),
        versions=dict(Counter(r[1] for r in rows)),
    )


def wilson(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: sound at small n and at 0% or 100%."""
    if n == 0:
        return float("nan"), float("nan")
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def compare(
    conn: psycopg.Connection, herd: HerdConfig, tc: TaskChoice, live_job: str, rest_job: str
) -> Comparison:
    """The live row, then each model alone, the herd file's cascade, the router and the oracle on the
    rest's calibration job. Raises what herd.policy.calibration.load raises (e.g. an unscored job)."""
    task, scorer = tc.task, tc.loaded.scorer
    ran = live(conn, live_job, scorer)
    rest = calibration.load(conn, herd, rest_job, task, scorer)
    data, route = rest.data, rest.route
    out = [Row(f"chosen (v{tc.version})", ran.correct / max(ran.n, 1), ran.n, ran.cost_per_1k, LIVE)]

    def replayed(label: str, policy: Policy) -> Row:
        result = replay(data, policy)
        return Row(label, result.quality, data.n, result.cost_per_1k, REPLAY)

    if len(tc.choice.policy.tiers) > 1:  # a single model's replay is its own row below
        out.append(replayed("chosen, replayed", tc.choice.policy))
    out += [replayed(f"{m} alone", Policy.single(task, m)) for m in route]
    out.append(replayed("herd file cascade", herd_policy(herd, task)))
    shares = None
    if tc.router is not None:
        p = tc.router.p_good(prompt_texts(conn, data.prompt_ids))
        choice = route_rule(p, tc.router.cost_usd, tc.router.tau)
        acc, cost = outcome(data, list(tc.router.models), choice)
        out.append(Row("router (TF-IDF)", acc, data.n, cost, REPLAY))
        shares = {m: float((choice == j).mean()) for j, m in enumerate(tc.router.models)}
    acc, cost = outcome(data, route, oracle_choice(data, route))
    out.append(Row("oracle (hindsight)", acc, data.n, cost, REPLAY))
    return Comparison(ran, out, shares)


COLUMNS = (
    Column("policy", numeric=False),
    Column("accuracy"),
    Column("95% CI", "accuracy 95% CI (Wilson)"),
    Column("$ per 1k", "attributed cost per 1k prompts"),
    Column("from", "measured on", numeric=False),
)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"


def table_rows(found: list[Row]) -> list[list[str]]:
    cells = []
    for r in found:
        low, high = wilson(r.accuracy, r.n)
        cells.append([r.label, _pct(r.accuracy), f"{_pct(low)}-{_pct(high)}", usd(r.cost_per_1k), r.source])
    return cells


def verdict(tc: TaskChoice, found: Comparison) -> str:
    """The chosen policy as run against the calibration target, judged on the rest."""
    chosen, best = found.rows[0], found.row(f"{tc.best_alone} alone")
    floor = AT * best.accuracy
    what = f"{AT:.0%} of {tc.best_alone} alone on the same prompts ({_pct(floor)})"
    promise = (
        f"promised at {tc.choice.confidence:.0%} confidence"
        if tc.choice.guaranteed
        else "chosen without a guarantee"
    )
    if chosen.accuracy >= floor - 1e-12:
        return f"On the rest the chosen policy ({_pct(chosen.accuracy)}, {promise}) meets the target, {what}."
    return (
        f"Missed on the rest: the chosen policy's {_pct(chosen.accuracy)} is below the target, {what}; it "
        f"was {promise}"
        + (
            f", which fails in up to {1 - (tc.choice.confidence or 0):.0%} of samples."
            if tc.choice.guaranteed
            else "."
        )
    )


def print_task(console: Console, tc: TaskChoice, found: Comparison, live_job: str, rest_job: str) -> None:
    ran = found.live
    n = ran.n
    print_table(
        console,
        COLUMNS,
        table_rows(found.rows),
        title=f"{tc.task}: the rest, {n} prompts never used to choose",
    )
    decided = ran.versions.get(tc.version, 0)
    note = (
        f"chosen = {tc.choice.policy.summary()}. '{LIVE}': {live_job}, what the workers did "
        f"({ran.escalated} of {n} prompts escalated"
        + (f", {ran.failed} failed" if ran.failed else "")
        + f"; version {tc.version} decided {decided} of {n}"
    )
    others = {v: k for v, k in ran.versions.items() if v != tc.version}
    if others:
        named = ", ".join(
            f"{k} by {'the herd file' if v is None else f'version {v}'}" for v, k in others.items()
        )
        note += f", {named}: workers still held the old policy in their cache"
    note += (
        f"). '{REPLAY}': from {rest_job}, where every model answered these same prompts; "
        "the router picks one model per prompt before any answer"
    )
    if found.router_shares is not None:
        picks = ", ".join(f"{share:.0%} to {m}" for m, share in found.router_shares.items())
        note += f" (here {picks})"
    note += "; the oracle is the ceiling, the cheapest right model per prompt in hindsight."
    say(console, verdict(tc, found))
    say(console, note)


def cost_note() -> str:
    return (
        "Costs are attributed busy seconds at the herd file's illustrative CPU prices. The models share "
        "the machine's cores, so a call slows while the other model (or anything else) is busy: the "
        "live job and the rest's calibration job ran at different times, so compare costs among the "
        "replayed rows, which ran together. With tens of prompts per task, accuracy intervals are "
        "wide: read the 95% CI before the point figure."
    )
