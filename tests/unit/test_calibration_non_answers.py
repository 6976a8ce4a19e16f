"""A calibration sample's non-answers (errors, timeouts, empty or cut-off answers) are never wrong
answers: real Postgres, the Pipeline in process with scripted backends (tests/support/cascade.py).

The sample mirrors an outage: `small` is right and sure on the POS prompts and wrong on the NEG
ones (margin 0.25 on NEGA, 0.05 on NEGB); `large` is right everywhere but its calls fail (HTTP 500,
retries spent) on two thirds of the POS prompts. Scored as wrong answers, those failures made
"large alone" look like 0.667 and `herd calibrate --match large --at 0.98` escalate too little."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest

from herd.herdfile.model import HerdConfig
from herd.policy import calibration
from herd.policy.calibrate import MinQuality, choose
from herd.policy.calibration import MAX_NON_ANSWER_SHARE
from herd.policy.data import CalibrationData
from herd.policy.replay import replay
from herd.policy.router import train_router
from herd.policy.spec import Policy
from herd.reporting.versions import alone
from tests.support.cascade import CUT_OFF, HTTP_500, load, run_job, score
from tests.support.harness import Services
from tests.unit.policy.conftest import arrays, dataset
from tests.unit.test_policy_live import cli, p_of

POS, NEGA, NEGB = 30, 15, 15
N = POS + NEGA + NEGB
KEYS = [f"q{i:02d}" for i in range(N)]
REFS = {k: f"answer {k}" for k in KEYS}
OUTAGE = set(KEYS[:20])  # large fails on these (all POS)


def script(outage: set[str] = OUTAGE) -> dict[str, dict[str, tuple[str, float]]]:
    small = {
        k: (REFS[k], p_of(0.98)) if i < POS else ("wrong", p_of(0.25 if i < POS + NEGA else 0.05))
        for i, k in enumerate(KEYS)
    }
    large = {k: (HTTP_500, 0.0) if k in outage else (REFS[k], p_of(0.98)) for k in KEYS}
    return {"small": small, "large": large}


@pytest.fixture
def url(services: Services, db: psycopg.Connection) -> str:
    return services.database_url


def calibrated(url: str, herd: HerdConfig, s: dict[str, dict[str, tuple[str, float]]]) -> None:
    run_job(url, herd, s, "cal", REFS, kind="calibration")
    score(url, herd, "cal")


def test_errors_are_left_out_counted_and_a_sample_with_too_many_is_refused(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    calibrated(url, herd, script())
    with psycopg.connect(url) as conn:
        loaded = calibration.load(conn, herd, "cal", "qa")
    assert loaded.data.n == N - len(OUTAGE) and loaded.unanswered == len(OUTAGE)
    assert loaded.non_answers == {"large": {"http_5xx": len(OUTAGE)}}
    # large alone is what large does when it answers: every prompt right, not 0.667.
    assert replay(loaded.data, Policy.single("qa", "large")).quality == 1.0

    refused = cli(path, url, "calibrate", "cal", "--task", "qa", "--match", "large", "--at", "0.98")
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1, refused.output
    assert "20 of 60 prompts left out" in lines[0] and "large: 20 http_5xx" in lines[0]
    assert "--allow-non-answers" in lines[0]
    assert db.execute("SELECT count(*) FROM policies").fetchone() == (0,)

    replayed = cli(path, url, "replay", "cal", "--task", "qa", "--policy", str(_large_alone(tmp_path)))
    assert "20 of 60 prompts left out" in replayed.output and "WARNING: over 10%" in replayed.output
    assert "quality: 1.000" in replayed.output

    allowed = cli(
        path,
        url,
        "calibrate",
        "cal",
        "--task",
        "qa",
        "--match",
        "large",
        "--at",
        "0.98",
        "--method",
        "point",
        "--allow-non-answers",
    )
    assert allowed.exit_code == 0, allowed.output
    assert "large: 20 http_5xx" in allowed.output and "large alone: quality 1.000" in allowed.output
    row = db.execute("SELECT text FROM policies").fetchone()
    assert row is not None
    chosen = Policy.from_text(row[0])
    # Either large alone, or a cascade that escalates NEGA (margin 0.25) as well as NEGB: on the
    # healthy live traffic the policy keeps large's quality, where the outage made it keep NEGA.
    healthy = _healthy(url, herd, tmp_path)
    assert replay(healthy, chosen).quality == 1.0, chosen.summary()


def _large_alone(tmp_path: Path) -> Path:
    path = tmp_path / "large.yaml"
    path.write_text(Policy.single("qa", "large").to_text())
    return path


def _healthy(url: str, herd: HerdConfig, tmp_path: Path) -> CalibrationData:
    """The same prompts with large healthy, as a second calibration job."""
    run_job(
        url,
        herd,
        script(set()),
        "cal-healthy",
        {f"q{i:02d}": REFS[k] for i, k in enumerate(KEYS)},
        kind="calibration",
    )
    score(url, herd, "cal-healthy")
    with psycopg.connect(url) as conn:
        return calibration.load(conn, herd, "cal-healthy", "qa").data


def test_cut_off_answers_are_their_own_outcome_and_a_few_are_allowed(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    herd = load(tmp_path)
    s = script(set())
    cut = KEYS[POS : POS + 3]  # small rambles past max_new_tokens on three prompts
    for k in cut:
        s["small"][k] = (CUT_OFF + "wrong and long", p_of(0.9))
    s["large"][KEYS[0]] = (HTTP_500, 0.0)
    calibrated(url, herd, s)
    with psycopg.connect(url) as conn:
        loaded = calibration.load(conn, herd, "cal", "qa")
        models = alone(conn, "qa", "exact")
    assert loaded.non_answers == {"small": {"cut_off": 3}, "large": {"http_5xx": 1}}
    assert loaded.unanswered == 4 and loaded.unanswered_share < MAX_NON_ANSWER_SHARE
    loaded.check_non_answers(False, "cal")  # under the share: no refusal
    # `herd report`'s "each model alone" leaves the same prompts out for every model, and says so.
    assert models is not None and models.prompts == N - 4 and models.unanswered == 4
    by_model = {r.model: r for r in models.rows}
    assert by_model["large"].quality == 1.0 and by_model["large"].no_answer == 1
    assert by_model["small"].no_answer == 3 and by_model["small"].prompts == N - 4
    result = cli(tmp_path / "herd.yaml", url, "calibrate", "cal", "--task", "qa", "--match", "large")
    assert result.exit_code == 0, result.output
    assert "4 of 60 prompts left out" in result.output and "small: 3 cut_off" in result.output
    stored = db.execute("SELECT estimates FROM policies").fetchone()
    assert stored is not None and stored[0]["left_out_no_answer"] == {
        "prompts": 4,
        "per_model": {"small": {"cut_off": 3}, "large": {"http_5xx": 1}},
    }


def test_the_pure_core_leaves_non_answers_out_too() -> None:
    """Data built without the ledger (synthetic, a benchmark): choosing and the router drop rows on
    which a model of the route gave no answer instead of scoring them 0."""
    n = 200
    right = (np.arange(n) % 5 != 0).astype(float)
    ok = np.ones(n, dtype=bool)
    ok[np.arange(n) % 4 == 1] = False  # large failed on 50 prompts
    margin = np.linspace(0, 1, n)
    data = dataset(
        {
            "small": arrays(np.where(margin > 0.3, 1.0, 0.0), 1e-6, margin=margin),
            "large": arrays(np.where(ok, right, np.nan), 1e-5, margin=np.full(n, 0.9), ok=ok),
        }
    )
    for method in ("point", "guarantee"):
        choice = choose(data, ["small", "large"], MinQuality(0.5), method=method)
        assert choice.left_out == {"large": 50}
        assert len(choice.train_rows) + len(choice.held_out_rows) == n - 50
    texts = [f"doc {'alpha' if m > 0.3 else 'beta'} {i}" for i, m in enumerate(margin)]
    router = train_router(texts, data, tau=0.5)
    assert router.info["n_train"] == n - 50


def test_a_sample_without_any_answer_says_so_instead_of_asking_for_scores(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    """Every model server unreachable during the sample: the one-line error names the non-answers,
    not a missing `herd score`."""
    herd = load(tmp_path)
    down = {m: {k: (HTTP_500, 0.0) for k in KEYS[:5]} for m in ("small", "large")}
    run_job(url, herd, down, "cal", {k: REFS[k] for k in KEYS[:5]}, kind="calibration")
    score(url, herd, "cal")
    result = cli(tmp_path / "herd.yaml", url, "calibrate", "cal", "--task", "qa", "--match", "large")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: calibration job 'cal': no model answered (large: 5 http_5xx; small: 5 http_5xx): "
        "nothing to choose on"
    )
