"""The cascade a routed prompt runs: from the router's entry model onwards, as the live pipeline does.

A prompt the router sends to model m starts at m (`prompts.model = m`); at every model the pipeline
asks `rule_for` (herd/policy/active.py): the active policy's tier when the policy names the model, else
the herd file's. `policy_from` walks those same rules from m and writes the path as a Policy, so
`herd replay --router` (herd.policy.router.replay_routed) replays exactly what live would run.
"""

from __future__ import annotations

from collections.abc import Iterable

from herd.herdfile.model import HerdConfig
from herd.policy.active import rule_for
from herd.policy.spec import Policy, Tier


def policy_from(herd: HerdConfig, task: str, entry: str, active: tuple[int, Policy] | None) -> Policy:
    """The Policy a prompt of `task` entering at `entry` follows under `active` (None: herd file).

    Tiers follow `Rule.next` from `entry`; refinement is on where the rule runs rounds; a p_correct
    tier keeps its calibration map. Raises ValueError if the rules loop (a herd file forbids that)."""
    tiers: list[Tier] = []
    calibration = {}
    model: str | None = entry
    seen: set[str] = set()
    while model is not None:
        if model in seen:
            raise ValueError(f"the cascade of task {task!r} from {entry!r} visits {model!r} twice")
        seen.add(model)
        rule = rule_for(herd, task, model, active)
        last = rule.next is None or rule.threshold is None
        if not last and rule.calibration is not None:
            calibration[model] = rule.calibration
        tiers.append(
            Tier(
                model=model,
                measure=None if last else rule.measure,  # type: ignore[arg-type]
                threshold=None if last else rule.threshold,
                refine=rule.rounds > 0,
            )
        )
        model = None if last else rule.next
    return Policy(task=task, entry=entry, tiers=tiers, calibration=calibration)


def entry_policies(
    herd: HerdConfig, task: str, entries: Iterable[str], active: tuple[int, Policy] | None
) -> dict[str, Policy]:
    """`policy_from` for each entry model."""
    return {m: policy_from(herd, task, m, active) for m in entries}
