"""Cost attribution, the reporting views, PeRFICS and `herd report`, on ledger rows written by hand.

Times are whole milliseconds after T0, so busy intervals land exactly on Postgres' microseconds and
the expected shares can be computed by hand (or by the slow reference sweep below).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from herd.ledger.jobs import UnknownJobError
from herd.reporting import build, plot, render
from herd.reporting.perfics import PolicyInput, Weights, cost_penalty, score
from tests.support.harness import Services, herd_env

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EPS = Decimal("1e-15")


def add_job(db: psycopg.Connection, name: str, entry: str = "small", task: str = "qa") -> int:
    row = db.execute(
        "INSERT INTO jobs (name, task, entry_model) VALUES (%s, %s, %s) RETURNING id", (name, task, entry)
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_prompt(
    db: psycopg.Connection, job_id: int, key: str, state: str = "done", model: str = "small"
) -> int:
    row = db.execute(
        """INSERT INTO prompts (job_id, doc_key, text, content_hash, state, model)
           VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
        (job_id, key, f"text of {key}", key, state, model),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_attempt(
    db: psycopg.Connection,
    prompt_id: int,
    model: str,
    start: float,
    end: float,
    *,
    endpoint: str | None = "http://small",
    stage: str = "answer",
    round_: int = 0,
    status: str = "ok",
    escalated: bool = False,
    gpu_count: int = 1,
    price: str = "0.8",
    latency: float | None = None,
) -> int:
    """An attempt busy over [start, end] seconds after T0 (no endpoint: an error before the call)."""
    row = db.execute(
        """INSERT INTO attempts (prompt_id, model, stage, round, status, answer, escalated, endpoint,
                                 busy_s, gpu_count, usd_per_gpu_hour, latency_s, started_at,
                                 finished_at, prompt_tokens, generated_tokens)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 10, 5) RETURNING id""",
        (
            prompt_id,
            model,
            stage,
            round_,
            status,
            "an answer" if status == "ok" else None,
            escalated,
            endpoint,
            round(end - start, 3) if endpoint else None,
            gpu_count,
            Decimal(price),
            latency if latency is not None else (end - start if status == "ok" else None),
            T0 + timedelta(seconds=start),
            T0 + timedelta(seconds=end),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_final(db: psycopg.Connection, prompt_id: int, attempt_id: int, model: str) -> None:
    db.execute(
        "INSERT INTO finals (prompt_id, attempt_id, model, answer) VALUES (%s, %s, %s, 'an answer')",
        (prompt_id, attempt_id, model),
    )


def add_score(db: psycopg.Connection, attempt_id: int, scorer: str, value: float) -> None:
    db.execute(
        "INSERT INTO scores (attempt_id, scorer, score) VALUES (%s, %s, %s)", (attempt_id, scorer, value)
    )


def shares(db: psycopg.Connection) -> dict[int, Decimal]:
    return {int(a): s for a, s in db.execute("SELECT attempt_id, shared_s FROM attempt_costs").fetchall()}


# --- attribution -----------------------------------------------------------------------------------


def test_concurrent_requests_on_one_endpoint_share_the_busy_second(db: psycopg.Connection) -> None:
    job = add_job(db, "burst")
    ids = [add_attempt(db, add_prompt(db, job, f"d{i}"), "small", 10, 11) for i in range(4)]
    got = shares(db)
    assert [got[i] for i in ids] == [Decimal("0.25")] * 4
    assert sum(got.values()) == 1


def test_staggered_overlaps_are_split_per_segment(db: psycopg.Connection) -> None:
    job = add_job(db, "staggered")
    p = iter(add_prompt(db, job, f"d{i}") for i in range(8))
    a = add_attempt(db, next(p), "small", 0, 2, endpoint="e1")
    b = add_attempt(db, next(p), "small", 1, 3, endpoint="e1")
    # [0,1] A alone, [1,2] A+B+C, [2,3] A+C, [3,4] A+D, [4,5] D alone.
    c = add_attempt(db, next(p), "small", 0, 4, endpoint="e2")
    d = add_attempt(db, next(p), "small", 1, 2, endpoint="e2")
    e = add_attempt(db, next(p), "small", 1, 3, endpoint="e2")
    f = add_attempt(db, next(p), "small", 3, 5, endpoint="e2")
    # Back to back: one ends when the other starts, so neither shares.
    g = add_attempt(db, next(p), "small", 0, 1, endpoint="e3")
    h = add_attempt(db, next(p), "small", 1, 2, endpoint="e3")
    got = shares(db)
    assert (got[a], got[b]) == (Decimal("1.5"), Decimal("1.5"))
    third = Decimal(1) / 3
    assert abs(got[c] - (1 + third + Decimal("1.0"))) < EPS
    assert abs(got[d] - third) < EPS
    assert abs(got[e] - (third + Decimal("0.5"))) < EPS
    assert got[f] == Decimal("1.5")
    assert abs(got[c] + got[d] + got[e] + got[f] - 5) < EPS  # the union of busy time, not 1+3+...
    assert (got[g], got[h]) == (1, 1)


def test_endpoints_and_errors(db: psycopg.Connection) -> None:
    one, other = add_job(db, "one"), add_job(db, "other")
    a = add_attempt(db, add_prompt(db, one, "a"), "small", 0, 2, endpoint="http://gpu-1")
    b = add_attempt(db, add_prompt(db, one, "b"), "small", 0, 2, endpoint="http://gpu-2")
    # Another job on gpu-1 at the same time holds the same GPUs: the two jobs share them.
    c = add_attempt(db, add_prompt(db, other, "c"), "small", 1, 2, endpoint="http://gpu-1")
    failed = add_attempt(db, add_prompt(db, one, "d", "failed"), "small", 0, 1, endpoint=None, status="error")
    # A nonsense busy time (NaN) is not charged, and does not break the views for everyone else.
    nan = add_attempt(db, add_prompt(db, one, "e"), "small", 0, 1, endpoint="http://gpu-1")
    db.execute("UPDATE attempts SET busy_s = 'NaN' WHERE id = %s", (nan,))
    got = shares(db)
    assert got[nan] == 0
    assert (got[a], got[b], got[c]) == (Decimal("1.5"), 2, Decimal("0.5"))
    assert got[failed] == 0
    row = db.execute(
        "SELECT cost_usd, busy_start FROM attempt_costs WHERE attempt_id = %s", (failed,)
    ).fetchone()
    assert row == (0, None)


def test_cost_is_share_times_gpus_times_price_per_hour(db: psycopg.Connection) -> None:
    job = add_job(db, "priced")
    ids = [
        add_attempt(db, add_prompt(db, job, f"d{i}"), "large", 0, 3, gpu_count=2, price="3.123457")
        for i in range(3)
    ]
    for attempt_id in ids:
        shared, gpu_s, cost = db.execute(
            "SELECT shared_s, attributed_gpu_seconds, cost_usd FROM attempt_costs WHERE attempt_id = %s",
            (attempt_id,),
        ).fetchone()  # type: ignore[misc]
        assert shared == 1 and gpu_s == 2
        expected = shared * 2 * Decimal("3.123457") / 3600
        # Exact to the last digit Postgres keeps (numeric division stops at its own scale).
        assert cost == expected.quantize(Decimal(1).scaleb(cost.as_tuple().exponent))


# --- a small job, by hand --------------------------------------------------------------------------


def hand_job(db: psycopg.Connection, name: str = "hand") -> None:
    """3 prompts; small (1 GPU, $0.8/h) -> large (2 GPUs, $3/h); p3 escalates; p2 is refined.

    small's endpoint: p1 [0,2], p2 [1,3], p3 [2,3], p2 critique [3,4], p2 refine [4,6]
      -> shares 1.5, 1.0, 0.5, 1.0, 2.0 (6 s: the union [0,6]). large: p3 [4,6] alone -> 2 s.
    """
    job = add_job(db, name)
    p1, p2, p3 = (add_prompt(db, job, key) for key in ("p1", "p2", "p3"))
    s1 = add_attempt(db, p1, "small", 0, 2, latency=3.0)
    s2 = add_attempt(db, p2, "small", 1, 3)
    s3 = add_attempt(db, p3, "small", 2, 3, escalated=True)
    add_attempt(db, p2, "small", 3, 4, stage="critique", round_=1)
    r2 = add_attempt(db, p2, "small", 4, 6, stage="refine", round_=1)
    l3 = add_attempt(db, p3, "large", 4, 6, endpoint="http://large", gpu_count=2, price="3")
    for prompt_id, attempt_id, model in ((p1, s1, "small"), (p2, r2, "small"), (p3, l3, "large")):
        add_final(db, prompt_id, attempt_id, model)
    for attempt_id, exact, judge in ((s1, 1, 0.8), (s2, 0, 0.4), (r2, 1, 0.7), (s3, 0, 0.2), (l3, 1, 0.9)):
        add_score(db, attempt_id, "exact", exact)
        add_score(db, attempt_id, "judge", judge)


def close(got: Decimal | None, want: float | Decimal) -> bool:
    return got is not None and abs(got - Decimal(str(want))) < Decimal("1e-12")


def test_hand_computed_job(db: psycopg.Connection) -> None:
    hand_job(db)
    built = build.build(db, "hand")
    assert built.scorer == "exact" and built.scorers == ["exact", "judge"]
    s = built.summary
    assert (s.prompts, s.done, s.failed) == (3, 3, 0)
    assert (s.window_start, s.window_end) == (T0, T0 + timedelta(seconds=6))
    assert close(s.cost_usd, Decimal("16.8") / 3600)  # small 6 s x 1 x 0.8 + large 2 s x 2 x 3
    assert close(s.attributed_gpu_hours, Decimal(10) / 3600)
    # Provisioned: the 6 s window x (1 small GPU + 2 large GPUs), at their prices.
    assert close(s.provisioned_gpu_hours, Decimal(18) / 3600)
    assert close(s.provisioned_cost_usd, Decimal("40.8") / 3600)
    assert close(s.cost_per_1k_prompts_usd, Decimal("16800") / 3600 / 3)

    rows = {r.policy: r for r in built.rows}
    assert [r.policy for r in built.rows] == ["small", "large", "cascade", "small-only"]
    small, large, cascade, only = rows["small"], rows["large"], rows["cascade"], rows["small-only"]
    assert (small.prompts, small.escalations, small.refinements) == (3, 1, 1)
    assert (large.prompts, large.escalations, large.refinements) == (1, 0, 0)
    assert (cascade.prompts, cascade.escalations, cascade.refinements) == (3, 1, 1)
    assert close(small.cost_usd, Decimal("4.8") / 3600) and close(small.gpu_hours, Decimal(6) / 3600)
    assert close(large.cost_usd, Decimal(12) / 3600) and close(large.gpu_hours, Decimal(4) / 3600)
    assert close(cascade.cost_usd, Decimal("16.8") / 3600) and close(cascade.gpu_hours, Decimal(10) / 3600)
    assert close(small.cost_per_1k_prompts_usd, Decimal(4800) / 3600 / 3)
    assert close(large.cost_per_1k_prompts_usd, Decimal(12000) / 3600)
    assert close(small.provisioned_cost_usd, Decimal("4.8") / 3600)
    assert close(large.provisioned_cost_usd, Decimal(36) / 3600)
    assert close(small.refinement_rounds, Decimal(1) / 3)
    # Latency of small's ok attempts: 3, 2, 1, 1, 2 -> p50 2, p95 2 + 0.8 x (3 - 2).
    assert small.latency_p50_s == pytest.approx(2.0) and small.latency_p95_s == pytest.approx(2.8)
    assert (small.quality_base, small.quality_refined) == pytest.approx((1 / 3, 2 / 3))
    assert (large.quality_base, large.quality_refined) == pytest.approx((1.0, 1.0))
    assert (cascade.quality_base, cascade.quality_refined) == pytest.approx((1 / 3, 1.0))
    assert only.prompts == 3 and (only.quality_base, only.quality_refined) == pytest.approx((1 / 3, 2 / 3))
    assert close(only.cost_usd, small.cost_usd) and only.escalations == 0

    # PeRFICS: the cheapest (small, 0.444 $/1k) pays nothing; large costs 7.5x, the cascade 3.5x.
    assert small.perfics == pytest.approx(2 / 3 + 0.5 * (1 / 3))
    assert large.perfics == pytest.approx(1 - 0.05 * math.log2(7.5))
    assert cascade.perfics == pytest.approx(1 + 0.5 * (2 / 3) - 0.05 * math.log2(3.5))
    assert (cascade.rank, large.rank, small.rank, only.rank) == (1, 2, 3, 3)

    judged = build.build(db, "hand", scorer="judge", weights=Weights(p=1, r=0, c=0))
    assert {r.policy: r.perfics for r in judged.rows} == pytest.approx(
        {
            "small": (0.8 + 0.7 + 0.2) / 3,
            "large": 0.9,
            "cascade": (0.8 + 0.7 + 0.9) / 3,
            "small-only": 1.7 / 3,
        }
    )
    paths = db.execute(
        "SELECT path, final_model, prompts, share FROM escalation_paths WHERE job = 'hand' ORDER BY path"
    ).fetchall()
    assert [(p, f, n) for p, f, n, _ in paths] == [("small", "small", 2), ("small > large", "large", 1)]
    assert close(paths[0][3], Decimal(2) / 3)


def test_unknown_job_and_scorer(db: psycopg.Connection) -> None:
    hand_job(db)
    with pytest.raises(UnknownJobError):
        build.build(db, "nope")
    with pytest.raises(build.UnknownScorerError, match="exact, judge"):
        build.build(db, "hand", scorer="f1")


def test_job_without_scores_still_reports_costs(db: psycopg.Connection) -> None:
    job = add_job(db, "unscored")
    add_final(db, p := add_prompt(db, job, "a"), add_attempt(db, p, "small", 0, 1), "small")
    built = build.build(db, "unscored")
    assert built.scorer is None and [r.policy for r in built.rows] == ["small", "cascade", "small-only"]
    assert all(r.perfics is None and r.rank is None for r in built.rows)
    assert close(built.rows[0].cost_usd, Decimal("0.8") / 3600)


# --- the views and the report agree ----------------------------------------------------------------


def random_job(db: psycopg.Connection, seed: int = 7) -> dict[int, tuple[str, float, float]]:
    """40 prompts with random overlaps over 4 endpoints, escalations, refinements, errors and scores.

    Returns every busy attempt's (endpoint, start, end) for the reference sweep.
    """
    rng = random.Random(seed)
    job = add_job(db, "random")
    tiers = [
        ("small", ("http://s1", "http://s2"), 1, "0.8"),
        ("medium", ("http://m",), 1, "1.2"),
        ("large", ("http://l",), 2, "3"),
    ]
    busy: dict[int, tuple[str, float, float]] = {}
    for n in range(40):
        prompt = add_prompt(db, job, f"d{n}")
        t = rng.randrange(0, 20_000) / 1000
        for tier, (model, endpoints, gpus, price) in enumerate(tiers):
            endpoint = rng.choice(endpoints)
            if rng.random() < 0.05:  # an error before any call: no endpoint, no busy time
                add_attempt(
                    db, prompt, model, t, t, endpoint=None, status="error", gpu_count=gpus, price=price
                )
                db.execute("UPDATE prompts SET state = 'failed' WHERE id = %s", (prompt,))
                break
            escalate = tier < 2 and rng.random() < 0.4
            end = t + rng.randrange(50, 3000) / 1000
            last = add_attempt(
                db, prompt, model, t, end, endpoint=endpoint, escalated=escalate, gpu_count=gpus, price=price
            )
            busy[last] = (endpoint, t, end)
            add_score(db, last, "exact", rng.choice((0.0, 1.0)))
            t = end + 0.01
            if escalate:
                continue
            if rng.random() < 0.3:  # one critique + refine round
                for stage in ("critique", "refine"):
                    end = t + rng.randrange(50, 2000) / 1000
                    last = add_attempt(
                        db,
                        prompt,
                        model,
                        t,
                        end,
                        endpoint=endpoint,
                        stage=stage,
                        round_=1,
                        gpu_count=gpus,
                        price=price,
                    )
                    busy[last] = (endpoint, t, end)
                    t = end
                add_score(db, last, "exact", rng.choice((0.0, 1.0)))
            add_final(db, prompt, last, model)
            break
    return busy


def reference_shares(busy: dict[int, tuple[str, float, float]]) -> dict[int, float]:
    """Processor sharing the slow, obvious way: every elementary segment, every attempt."""
    out = dict.fromkeys(busy, 0.0)
    for endpoint in {e for e, _, _ in busy.values()}:
        mine = {i: (s, e) for i, (ep, s, e) in busy.items() if ep == endpoint}
        instants = sorted({t for span in mine.values() for t in span})
        for lo, hi in zip(instants, instants[1:], strict=False):
            active = [i for i, (s, e) in mine.items() if s <= lo and e >= hi]
            for i in active:
                out[i] += (hi - lo) / len(active)
    return out


def test_sweep_matches_the_reference_and_views_agree_with_the_report(
    db: psycopg.Connection, services: Services
) -> None:
    busy = random_job(db)
    got = shares(db)
    for attempt_id, want in reference_shares(busy).items():
        assert float(got[attempt_id]) == pytest.approx(want, abs=1e-9)
    assert all(got[a] == 0 for a in set(got) - set(busy))

    built = build.build(db, "random")
    # A user in psql: a separate connection, the views, nothing else.
    with psycopg.connect(services.database_url) as user:
        job = user.execute(
            "SELECT cost_usd, attributed_gpu_hours, provisioned_cost_usd, cost_per_1k_prompts_usd "
            "FROM job_costs WHERE job = 'random'"
        ).fetchone()
        per_model = {
            r[0]: r[1:]
            for r in user.execute(
                "SELECT model, cost_usd, escalations, refinements, latency_p50_s, provisioned_cost_usd "
                "FROM job_model_costs WHERE job = 'random'"
            ).fetchall()
        }
        policies = {
            r[0]: r[1:]
            for r in user.execute(
                "SELECT policy, prompts, quality_base, quality_refined, cost_usd, cost_per_1k_prompts_usd, "
                "gpu_hours FROM perfics_inputs WHERE job = 'random' AND scorer = 'exact'"
            ).fetchall()
        }
    s = built.summary
    cents = Decimal("0.01")
    assert job is not None
    expected = (s.cost_usd, s.attributed_gpu_hours, s.provisioned_cost_usd, s.cost_per_1k_prompts_usd)
    assert all(v is not None for v in expected)
    assert [v.quantize(cents) for v in job] == [v.quantize(cents) for v in expected if v is not None]
    assert job == (s.cost_usd, s.attributed_gpu_hours, s.provisioned_cost_usd, s.cost_per_1k_prompts_usd)
    assert (
        set(policies)
        == {r.policy for r in built.rows}
        == {"small", "medium", "large", "cascade", "small-only"}
    )
    for row in built.rows:
        assert policies[row.policy] == (
            row.prompts,
            row.quality_base,
            row.quality_refined,
            row.cost_usd,
            row.cost_per_1k_prompts_usd,
            row.gpu_hours,
        )
        if row.kind == "model":
            assert per_model[row.policy] == (
                row.cost_usd,
                row.escalations,
                row.refinements,
                row.latency_p50_s,
                row.provisioned_cost_usd,
            )
    # The job's attributed cost is the sum of its models', and of its attempts' costs.
    assert sum(m[0] for m in per_model.values()) == s.cost_usd
    assert next(r for r in built.rows if r.policy == "cascade").cost_usd == s.cost_usd


# --- PeRFICS ---------------------------------------------------------------------------------------


def policy(
    name: str, base: float | None, refined: float | None, cost: str, scorer: str = "exact"
) -> PolicyInput:
    return PolicyInput(name, "qa", scorer, base, refined, Decimal(cost))


def test_perfics_formula_and_ranking() -> None:
    rows = [
        policy("cheap", 0.5, 0.6, "1"),
        policy("dear", 0.7, 0.9, "4"),  # two doublings: -0.1
        policy("same", 0.7, 0.9, "4"),
        policy("other scorer", 0.1, 0.1, "8", scorer="judge"),  # cheapest of its own group
        policy("unscored", None, None, "0.5"),  # no quality: unranked, and not C_min
    ]
    got = score(rows, Weights())
    assert got[0].perfics == pytest.approx(0.6 + 0.5 * 0.1)
    assert got[1].perfics == pytest.approx(0.9 + 0.5 * 0.2 - 0.05 * 2)
    assert got[1].cost_penalty == pytest.approx(0.1)
    assert [g.rank for g in got] == [3, 1, 1, 1, None]
    assert got[3].perfics == pytest.approx(0.1) and got[3].cost_penalty == 0
    assert got[4].perfics is None
    heavy = score(rows, Weights(p=1, r=0, c=1))
    assert [g.rank for g in heavy] == [1, 2, 2, 1, None]


def test_perfics_zero_cost() -> None:
    got = score(
        [policy("free", 0.2, 0.2, "0"), policy("paid", 0.5, 0.5, "2"), policy("dearer", 0.5, 0.5, "4")]
    )
    # A free policy pays nothing; the paid ones are compared with the cheapest *paid* one.
    assert [g.cost_penalty for g in got] == pytest.approx([0.0, 0.0, 0.05])
    assert cost_penalty(Decimal(0), Decimal(0), Weights()) == 0
    assert cost_penalty(Decimal(3), None, Weights()) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p=1,x=2", "expected p=NUMBER"),
        ("p=one", "not a number"),
        ("c=-1", ">= 0"),
        ("p=1,p=2", "twice"),
        ("r=nan", "finite"),
    ],
)
def test_bad_weights(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Weights.parse(text)


def test_weights_parse() -> None:
    assert Weights.parse("c=0.1") == Weights(p=1.0, r=0.5, c=0.1)
    assert Weights.parse(" p=2 , r=0 ,c=0 ") == Weights(2, 0, 0)
    assert str(Weights()) == "p=1,r=0.5,c=0.05"


# --- rendering and the CLI -------------------------------------------------------------------------


def test_money_and_html_escaping(db: psycopg.Connection) -> None:
    assert [render.money(Decimal(v)) for v in ("12.3456", "0.000444444", "1234.5", "0")] == [
        "12.35",
        "0.0004444",
        "1234.50",
        "0.00",
    ]
    # The ledger's zero sums come back as Decimal("0E-20"): shown as 0, never "0e-20".
    assert [render._num(Decimal("0E-20"), spec) for spec in (".4g", ".3f")] == ["0", "0.000"]
    hand_job(db, name="<b>night & day</b>")
    out = io.StringIO()
    render.render(build.build(db, "<b>night & day</b>"), "html", out)
    page = out.getvalue()
    assert "&lt;b&gt;night &amp; day&lt;/b&gt;" in page and "<b>" not in page
    assert page.startswith("<!doctype html>") and page.count("<tr>") == 5


def test_pareto_front() -> None:
    points = [(1.0, 0.5, "a"), (2.0, 0.4, "b"), (2.0, 0.7, "c"), (3.0, 0.7, "d"), (5.0, 0.9, "e")]
    assert [p[2] for p in plot.pareto_front(points)] == ["a", "c", "e"]


def herd(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    env = herd_env(services, None)
    return subprocess.run(
        [sys.executable, "-m", "herd", *args],
        env=env,
        cwd=services.home,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_report(db: psycopg.Connection, services: Services, tmp_path: Path) -> None:
    hand_job(db)
    built = build.build(db, "hand")
    done = herd(services, "report", "hand", "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["scorer"] == "exact" and doc["weights"] == {"p": 1.0, "r": 0.5, "c": 0.05}
    # Numbers a program can use: Decimal figures rounded to decimal_places, unknowns null.
    assert doc["decimal_places"] == render.DECIMAL_PLACES == 6
    assert doc["job"]["cost_usd"] == 0.004667  # 16.8 / 3600 = 0.0046666...
    assert doc["job"]["cost_per_1k_prompts_usd"] == 1.555556
    cascade = doc["rows"][2]
    assert cascade["policy"] == "cascade" and cascade["latency_p50_s"] is None
    assert cascade["refinement_rounds"] == 0.333333 and cascade["rank"] == 1
    assert [r["partial"] for r in doc["rows"]] == [False, True, False, False]  # large saw 1 of 3 prompts
    texts = {"job", "task", "window_start", "window_end", "policy", "kind", "partial"}
    figures = [v for d in (doc["job"], *doc["rows"]) for k, v in d.items() if k not in texts]
    assert figures and all(v is None or type(v) in (int, float) for v in figures)
    assert [(r["policy"], r["rank"]) for r in doc["rows"]] == [(r.policy, r.rank) for r in built.rows]

    done = herd(services, "report", "hand", "--format", "csv", "--scorer", "judge", "--weights", "c=0.1")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["policy"] for r in rows] == ["small", "large", "cascade", "small-only"]
    assert {r["scorer"] for r in rows} == {"judge"}
    assert rows[0]["cost_usd"] == "0.001333"  # 4.8 / 3600, rounded to 6 places, fixed-point
    assert rows[2]["latency_p50_s"] == "" and rows[3]["provisioned_cost_usd"] == ""

    png = tmp_path / "out.png"
    table = tmp_path / "report.txt"
    done = herd(services, "report", "hand", "--plot", str(png), "--output", str(table))
    assert done.returncode == 0, done.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "cascade" in table.read_text() and "PeRFICS" in table.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "report.txt"]  # no .partial left

    bad = herd(services, "report", "hand", "--weights", "p=1,q=2")
    assert bad.returncode == 2 and "--weights" in bad.stderr
    missing = herd(services, "report", "nope")
    assert missing.returncode == 2 and "no job named 'nope'" in missing.stderr
