"""Router evaluation and router → cascade replay: single-model routers reproduce replay exactly."""

from __future__ import annotations

import numpy as np
import pytest

from herd.policy.replay import replay
from herd.policy.router import RouterError, apgr, cpt, herd_figure, oracle_choice, outcome, replay_routed
from herd.policy.router.evaluate import strong_weak
from herd.policy.spec import Policy, Tier
from herd.policy.synthetic import synthetic


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return synthetic(n=2000, seed=7)


@pytest.mark.parametrize("model", ["small", "medium", "large"])
def test_everything_to_one_model_reproduces_its_replay(data, model: str) -> None:  # type: ignore[no-untyped-def]
    policy = Policy.single(data.task, model)
    routed = replay_routed(data, [model] * data.n, {model: policy}, scorer_cut=0.5)
    alone = replay(data, policy, scorer_cut=0.5)
    assert np.array_equal(routed.score, alone.score) and np.array_equal(routed.cost_usd, alone.cost_usd)
    assert routed.quality == alone.quality and routed.cost_per_1k == alone.cost_per_1k
    models = data.models
    j = models.index(model)
    assert outcome(data, models, np.full(data.n, j), 0.5) == (alone.quality, alone.cost_per_1k)


def test_routed_cascade_is_the_policy_of_each_entry(data) -> None:  # type: ignore[no-untyped-def]
    cascade = Policy(
        task=data.task,
        entry="small",
        tiers=[Tier(model="small", measure="first_token_margin", threshold=0.6), Tier(model="large")],
    )
    large = Policy.single(data.task, "large")
    choice = np.where(np.arange(data.n) % 3 == 0, "large", "small")
    routed = replay_routed(data, choice, {"small": cascade, "large": large}, scorer_cut=0.5)
    whole = replay(data, cascade, scorer_cut=0.5)
    small_rows = choice == "small"
    assert np.array_equal(routed.score[small_rows], whole.score[small_rows])
    assert np.array_equal(routed.cost_usd[small_rows], whole.cost_usd[small_rows])
    assert np.array_equal(routed.score[~small_rows], replay(data, large, 0.5).score[~small_rows])
    assert set(routed.final_model[small_rows]) == {"small", "large"}
    with pytest.raises(RouterError, match="picks entry model 'large' but no policy starts there"):
        replay_routed(data, choice, {"small": cascade})
    with pytest.raises(RouterError, match="5 routing choices for 2000 prompts"):
        replay_routed(data, ["small"] * 5, {"small": cascade})


def test_oracle_strong_weak_and_herd_figure(data) -> None:  # type: ignore[no-untyped-def]
    models = data.models
    strong, weak = strong_weak(data, models)
    assert (models[strong], models[weak]) == ("large", "small")
    good = np.column_stack([data.plain[m].effective_score(0.5) >= 1 for m in models])
    assert outcome(data, models, oracle_choice(data, models), 0.5)[0] == good.any(axis=1).mean()
    fig = herd_figure(data, models, np.full(data.n, strong))
    assert fig.strong == "large" and fig.rescued == 0 and fig.share == 0.0
    perfect = herd_figure(data, models, oracle_choice(data, models))
    assert perfect.share == pytest.approx(perfect.possible)


def test_apgr_and_cpt_follow_routellm() -> None:
    x = np.array([0.0, 0.5, 1.0])
    # The linear mix of weak and strong recovers half the gap on average; CPT(50%) at half the cost.
    assert apgr(x, np.array([0.6, 0.7, 0.8]), 0.6, 0.8) == pytest.approx(0.5)
    assert cpt(x, np.array([0.6, 0.7, 0.8]), 0.6, 0.8) == pytest.approx(0.5)
    assert apgr(x, np.array([0.8, 0.8, 0.8]), 0.6, 0.8) == pytest.approx(1.0)
    assert cpt(np.array([0.0, 0.2, 1.0]), np.array([0.6, 0.8, 0.8]), 0.6, 0.8) == pytest.approx(0.1)
    assert np.isnan(cpt(x, np.array([0.6, 0.6, 0.6]), 0.6, 0.8))
