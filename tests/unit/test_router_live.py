"""The router wired into the live system, in process: real Postgres, fake backends scripted per prompt
(tests/support/cascade.py). A calibration job whose right model depends on topic words; `herd router
train/eval/list/activate` through the CLI; replay with a router; `herd submit` routing prompts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import psycopg
import pytest
import redis
from click.testing import CliRunner, Result

from herd.cascade.pipeline import Pipeline
from herd.cli import main
from herd.herdfile.model import HerdConfig
from herd.jobs.documents import Record
from herd.jobs.submit import submit
from herd.policy import calibration
from herd.policy.active import ActivePolicies
from herd.policy.router import train_router
from herd.policy.router import versions as routers
from herd.policy.router.synthetic import TOPICS, topic_texts
from herd.settings import get_settings
from tests.support.cascade import drive, load, score, scripted
from tests.support.harness import Services

N = 240
SMALL_TOPICS = {"finance", "cooking"}  # small is right on these; large on the others (and every 3rd)


def topic_set(n: int = N, seed: int = 3) -> tuple[list[str], list[str], dict[str, str]]:
    """(keys, texts, references): text `qNNN <topic sentence>`, the key the fake backends answer by."""
    texts, topics = topic_texts(n, seed)
    keys = [f"q{i:03d}" for i in range(n)]
    names = list(TOPICS)
    refs = {k: f"answer {k}" for k in keys}
    return (
        keys,
        [f"{k} {t}" for k, t in zip(keys, texts, strict=True)],
        refs | {f"topic:{k}": names[t] for k, t in zip(keys, topics, strict=True)},
    )


def topic_script(keys: list[str], refs: dict[str, str], small_always: bool = False) -> dict:  # type: ignore[type-arg]
    small, large = {}, {}
    for i, k in enumerate(keys):
        small_right = small_always or refs[f"topic:{k}"] in SMALL_TOPICS
        small[k] = (refs[k] if small_right else "wrong", 0.9)
        large[k] = (refs[k] if not small_right or i % 3 == 0 else "wrong", 0.9)
    return {"small": small, "large": large}


@pytest.fixture
def url(services: Services, db: psycopg.Connection) -> str:
    return services.database_url


def cli(herd_path: Path, url: str, *args: str) -> Result:
    get_settings.cache_clear()
    env = {"HERD_DATABASE_URL": url}
    result = CliRunner().invoke(main, ["--herd-file", str(herd_path), *args], env=env, catch_exceptions=False)
    get_settings.cache_clear()
    return result


def reuse(conn: psycopg.Connection) -> Callable[[], AbstractContextManager[psycopg.Connection]]:
    @contextmanager
    def same() -> Iterator[psycopg.Connection]:
        yield conn

    return same


def calibration_job(
    url: str, herd: HerdConfig, job: str = "cal", small_always: bool = False, scored: bool = True
) -> tuple[list[str], dict[str, str]]:
    """Submit the topic set as a calibration job, run every model on every prompt, score it."""
    keys, texts, refs = topic_set()
    records = [Record(k, t, refs[k], {}, f"t:{i}") for i, (k, t) in enumerate(zip(keys, texts, strict=True))]
    with psycopg.connect(url) as conn:
        result = submit(conn, herd, job=job, task="qa", records=records, window=10_000, kind="calibration")
    with psycopg.connect(url, autocommit=True) as shared:
        connect = reuse(shared)  # one connection for the ~500 steps: connecting costs more than a step
        pipe = Pipeline(
            herd,
            scripted(topic_script(keys, refs, small_always)),
            connect,
            ActivePolicies(connect, ttl_s=0.0),
            window=10_000,
        )
        drive(pipe, result.dispatched, connect)
    if scored:
        score(url, herd, job)
    return texts, refs


def test_router_train_and_eval_get_close_to_the_oracle(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    calibration_job(url, herd)
    trained = cli(path, url, "router", "train", "cal", "--task", "qa")
    assert trained.exit_code == 0, trained.output
    assert "recorded as router version 1 of task qa (active" in trained.output
    assert "168 train / 72 held-out prompts" in trained.output
    figures = db.execute("SELECT figures FROM routers WHERE version = 1").fetchone()[0]["held_out"]
    oracle, router = figures["oracle"]["accuracy"], figures["router"]["accuracy"]
    best_single = max(f["accuracy"] for f in figures["single"].values())
    assert oracle == 1.0 and best_single < 0.75
    assert router >= oracle - 0.08 and router > best_single + 0.15, trained.output  # topic words decide
    assert figures["herd"]["share"] >= 0.9 and figures["apgr"] > 0.5
    # A target picks tau on the train split; the new version becomes active.
    matched = cli(path, url, "router", "train", "cal", "--task", "qa", "--match", "large", "--at", "1")
    assert matched.exit_code == 0, matched.output
    assert "target 100% of large alone: tau" in matched.output and "version 2" in matched.output
    evaluated = cli(path, url, "router", "eval", "1", "--task", "qa", "--plot", str(tmp_path / "r.png"))
    assert evaluated.exit_code == 0, evaluated.output
    for text in (
        "on 72 held-out prompts of cal",
        "oracle",
        "large alone",
        "APGR",
        "CPT(50%)",
        "Herd figure",
        "router -> cascade",
    ):
        assert text in evaluated.output, (text, evaluated.output)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    listed = cli(path, url, "router", "list").output
    assert "  qa v1" in listed and "* qa v2" in listed and "tfidf" in listed
    assert "version 1 is active" in cli(path, url, "router", "activate", "1", "--task", "qa").output
    assert "no router now" in cli(path, url, "router", "deactivate", "--task", "qa").output


def test_a_router_sending_everything_to_one_model_reproduces_its_replay(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    calibration_job(url, herd)
    with psycopg.connect(url) as conn:
        loaded = calibration.load(conn, herd, "cal", "qa")
        texts = routers.prompt_texts(conn, loaded.data.prompt_ids)
        # tau 0: every prompt's cheapest model reaches P(good) >= 0, so all enter at small. No source
        # job: the replay runs on every prompt, as the plain replay does.
        everything_small = train_router(texts, loaded.data).with_tau(0.0)
        routers.record(conn, everything_small, None, {})
    small_alone = tmp_path / "small.yaml"
    small_alone.write_text("task: qa\nentry: small\ntiers:\n- model: small\n")

    def figures(output: str) -> tuple[str, str]:
        quality = re.search(r"^quality: ([0-9.]+)", output, re.M)
        cost = re.search(r"^cost per 1k prompts: (\$[0-9.]+)", output, re.M)
        assert quality and cost, output
        return quality.group(1), cost.group(1)

    for policy_args in (["--policy", str(small_alone)], []):  # small alone; the herd file's small -> large
        plain = cli(path, url, "replay", "cal", "--task", "qa", "--scorer-cut", "0.5", *policy_args)
        routed = cli(path, url, "replay", "cal", "--task", "qa", "--router", *policy_args)
        assert plain.exit_code == 0 and routed.exit_code == 0, (plain.output, routed.output)
        assert "entry small: 100.0% of prompts" in routed.output
        assert figures(routed.output) == figures(plain.output), (routed.output, plain.output)


def test_router_errors_are_one_line_and_write_nothing(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    calibration_job(url, herd, small_always=True, scored=False)
    cases = {
        "has no scores: run `herd score cal` first": ["cal"],
        "no job named 'nope'": ["nope"],
        "unknown task 'nope'": ["cal", "--task", "nope"],
        "unknown model 'huge'": ["cal", "--match", "huge"],
        "give at most one target": ["cal", "--min-quality", "0.5", "--match", "large"],
    }
    scored = {
        "model 'small': all 168 train answers are good": ["cal"],
        "unknown model(s) ['huge']; calibration job 'cal' has ['small', 'large']": [
            "cal",
            "--models",
            "small,huge",
        ],
        "no router threshold reaches accuracy 1.5": ["cal", "--models", "large", "--min-quality", "1.5"],
    }
    for phase in (cases, scored):
        if phase is scored:
            score(url, herd, "cal")
        for message, args in phase.items():
            task = [] if "--task" in args else ["--task", "qa"]
            result = cli(path, url, "router", "train", *args, *task)
            assert result.exit_code == 2, (args, result.output)
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)
    for args in (["router", "eval", "--task", "qa"], ["replay", "cal", "--task", "qa", "--router", "3"]):
        result = cli(path, url, *args)
        assert result.exit_code == 2 and result.output.startswith("error: task 'qa' has no"), result.output
    assert db.execute("SELECT count(*) FROM routers").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM active_routers").fetchone() == (0,)


def test_submit_routes_each_prompt_to_its_entry_models_queue(
    tmp_path: Path, url: str, db, services: Services
) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    calibration_job(url, herd)
    assert cli(path, url, "router", "train", "cal", "--task", "qa").exit_code == 0
    texts, topics = topic_texts(300, seed=99)  # unseen prompts
    records = [Record(f"d{i}", t, None, {}, f"new:{i}") for i, t in enumerate(texts)]
    with psycopg.connect(url) as conn:
        version, router = routers.load_active(conn, "qa")  # type: ignore[misc]
        result = submit(conn, herd, job="live", task="qa", records=records, window=10_000)
    expected = router.route_names(texts)
    p_good = router.p_good(texts)
    rows = db.execute(
        "SELECT p.doc_key, p.model, p.router_version, p.router_p_good FROM prompts p "
        "JOIN jobs j ON j.id = p.job_id WHERE j.name = 'live'"
    ).fetchall()
    assert len(rows) == 300 and version == 1
    for key, model, router_version, probs in rows:
        i = int(key[1:])
        assert model == expected[i] and router_version == 1
        assert set(probs) == {"small", "large"}  # JSONB keeps keys sorted by length, then bytes
        assert np.allclose([probs["small"], probs["large"]], p_good[i], atol=1e-4)
    names = list(TOPICS)
    small_share = np.mean(
        [e == "small" for e, t in zip(expected, topics, strict=True) if names[t] in SMALL_TOPICS]
    )
    large_share = np.mean(
        [e == "large" for e, t in zip(expected, topics, strict=True) if names[t] not in SMALL_TOPICS]
    )
    assert small_share > 0.9 and large_share > 0.9
    # The dispatches go to each prompt's entry model's queue.
    by_id = dict(db.execute("SELECT id, model FROM prompts").fetchall())
    assert result.dispatched and all(model == by_id[pid] for pid, model, _, _ in result.dispatched)
    from herd.queues import app, publish

    app.conf.broker_url = services.broker_url
    publish(result.dispatched)
    queues = redis.Redis.from_url(services.broker_url)
    assert queues.llen("herd.small") == expected.count("small")
    assert queues.llen("herd.large") == expected.count("large")
    # Without an active router, submit behaves as before: the entry model, no router columns.
    assert cli(path, url, "router", "deactivate", "--task", "qa").exit_code == 0
    with psycopg.connect(url) as conn:
        submit(conn, herd, job="plain", task="qa", records=records, window=0)
    plain = db.execute(
        "SELECT DISTINCT p.model, p.router_version, p.router_p_good FROM prompts p "
        "JOIN jobs j ON j.id = p.job_id WHERE j.name = 'plain'"
    ).fetchall()
    assert plain == [("small", None, None)]
    assert json.loads(router.to_json())["version"] == router.version


def test_report_of_a_routed_job_reads_each_prompts_own_entry(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    """`herd report` of a job whose prompts a router entered: the counterfactual is each prompt's own
    entry model without escalation ('routed entry'), not the herd file's entry model on every prompt,
    and a model the router sent prompts to is not footnoted as a later tier."""
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    calibration_job(url, herd)
    assert cli(path, url, "router", "train", "cal", "--task", "qa").exit_code == 0
    keys, texts, refs = topic_set()
    keys, texts = keys[:40], texts[:40]
    pairs = list(zip(keys, texts, strict=True))
    records = [Record(k, t, refs[k], {}, f"live:{i}") for i, (k, t) in enumerate(pairs)]
    with psycopg.connect(url) as conn:
        entries = dict(zip(keys, routers.load_active(conn, "qa")[1].route_names(texts), strict=True))  # type: ignore[index]
        result = submit(conn, herd, job="live", task="qa", records=records, window=10_000)
    script = topic_script(keys, refs)
    escalated = [k for k in keys if entries[k] == "small"][::3]  # small is unsure of these
    script["small"] |= {k: (script["small"][k][0], 0.6) for k in escalated}  # margin 0.2 < 0.5
    with psycopg.connect(url, autocommit=True) as shared:
        connect = reuse(shared)
        drive(
            Pipeline(herd, scripted(script), connect, ActivePolicies(connect, ttl_s=0.0), window=10_000),
            result.dispatched,
            connect,
        )
    score(url, herd, "live")
    routed_to = {m: sum(e == m for e in entries.values()) for m in ("small", "large")}
    assert routed_to["small"] and routed_to["large"] and escalated, (routed_to, escalated)

    rows = {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT policy, kind, prompts, quality_base, quality_refined, cost_usd FROM perfics_inputs "
            "WHERE job = 'live' AND scorer = 'exact'"
        ).fetchall()
    }
    assert set(rows) == {"small", "large", "cascade", "routed entry"}
    right = [script[entries[k]][k][0] == refs[k] for k in keys]
    entry_cost = db.execute(
        "SELECT sum(c.cost_usd) FROM attempt_costs c JOIN prompts p ON p.id = c.prompt_id "
        "WHERE c.job = 'live' AND c.model = (SELECT a.model FROM attempts a WHERE a.prompt_id = p.id "
        "ORDER BY a.id LIMIT 1)"
    ).fetchone()[0]
    kind, prompts, base, refined, cost = rows["routed entry"]
    assert (kind, prompts) == ("counterfactual", 40)
    assert base == pytest.approx(np.mean(right)) and refined == pytest.approx(np.mean(right))
    assert cost == entry_cost < rows["cascade"][4]  # the escalations to large are not in it
    assert rows["cascade"][2] == pytest.approx(np.mean(right))  # the cascade's first answers: the entries
    assert rows["small"][1] == routed_to["small"] and rows["large"][1] == routed_to["large"] + len(escalated)

    report = cli(path, url, "report", "live", "--scorer", "exact")
    assert report.exit_code == 0, report.output
    assert "small-only" not in report.output and "routed entry" in report.output
    assert "small*" in report.output and "large*" in report.output
    assert "* routed per prompt: quality and cost on the prompts the router sent to it" in report.output
    assert "a later tier" not in report.output, report.output
    built = json.loads(cli(path, url, "report", "live", "--format", "json").stdout)
    entry_row = next(r for r in built["rows"] if r["policy"] == "routed entry")
    assert entry_row["escalations"] == 0 and entry_row["latency_p50_s"] is None
