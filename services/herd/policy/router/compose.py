"""Router → cascade: the router picks each prompt's entry model, the cascade runs from there.

Replaying "router + cascade" on a prompt is replaying the policy whose entry is the router's pick
(herd.policy.replay), so `replay_routed` splits the prompts by entry model, replays each group with
its policy, and puts the per-prompt outcomes back in prompt order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from herd.policy.data import CalibrationData
from herd.policy.replay import ReplayResult, replay
from herd.policy.router.model import RouterError
from herd.policy.spec import Policy


@dataclass(frozen=True)
class RoutedReplay:
    """Per prompt (n,): `entry` model name, `final_model` whose attempt ended it, `failed`,
    `escalations`, `score` (0/1 with a scorer cut), `cost_usd`; `by_entry`: each group's ReplayResult
    (rows in `rows[entry]`, indices into the data)."""

    prompt_ids: np.ndarray
    entry: np.ndarray
    final_model: np.ndarray
    failed: np.ndarray
    escalations: np.ndarray
    score: np.ndarray
    cost_usd: np.ndarray
    by_entry: dict[str, ReplayResult]
    rows: dict[str, np.ndarray]

    @property
    def quality(self) -> float:
        """Mean final score over all prompts (failures count 0), as ReplayResult.quality."""
        return float(self.score.mean())

    @property
    def cost_per_1k(self) -> float:
        """Mean attributed cost per prompt × 1000, USD per 1k prompts."""
        return float(self.cost_usd.mean() * 1000.0)

    def entry_share(self) -> dict[str, float]:
        return {m: len(r) / len(self.entry) for m, r in self.rows.items()}


def replay_routed(
    data: CalibrationData,
    choice: Sequence[str] | np.ndarray,
    policies_by_entry: Mapping[str, Policy],
    scorer_cut: float | None = None,
) -> RoutedReplay:
    """Replay per prompt the policy of its routed entry model: prompt i runs
    `policies_by_entry[choice[i]]` (whose `entry` must be `choice[i]`). `choice` (n,) model names.
    A router sending every prompt to m with {m: policy} gives exactly `replay(data, policy)`.

    Raises RouterError: `choice` not of length n, or an entry model with no policy (or a policy whose
    entry differs); CalibrationDataError from replay (a tier's model or measure missing)."""
    entries = np.asarray(choice, dtype=object)
    if entries.shape != (data.n,):
        raise RouterError(f"{entries.shape[0] if entries.ndim else 0} routing choices for {data.n} prompts")
    n = data.n
    final_model = np.empty(n, dtype=object)
    failed, escalations = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    score, cost = np.zeros(n), np.zeros(n)
    by_entry: dict[str, ReplayResult] = {}
    rows: dict[str, np.ndarray] = {}
    for model in sorted({str(e) for e in entries}):
        policy = policies_by_entry.get(model)
        if policy is None:
            raise RouterError(f"the router picks entry model {model!r} but no policy starts there")
        if policy.entry != model:
            raise RouterError(f"the policy for entry {model!r} starts at {policy.entry!r}")
        idx = np.nonzero(entries == model)[0]
        result = replay(data.take(idx), policy, scorer_cut)
        by_entry[model], rows[model] = result, idx
        final_model[idx] = np.asarray(policy.models, dtype=object)[result.final_tier]
        failed[idx], escalations[idx] = result.failed, result.escalations
        score[idx], cost[idx] = result.score, result.cost_usd
    return RoutedReplay(
        data.prompt_ids, entries, final_model, failed, escalations, score, cost, by_entry, rows
    )
