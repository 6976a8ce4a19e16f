"""How `herd demo` splits each bundled task's documents and names its jobs.

Per task, a seeded sample (40% by default) is the calibration job: every model answers every prompt,
and `herd calibrate` chooses the policy on it. The rest of the set is run twice: as the live job under
the chosen policy (what the workers really do), and as a calibration job of its own, so each model
alone, the herd file's cascade and the router are measured on the very prompts the live job answered,
none of which the policy or the router saw while being chosen or trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from herd.jobs import documents
from herd.jobs.documents import Record
from herd.jobs.sampling import sample

CALIBRATION_SHARE = 0.4
SEED = 0


@dataclass(frozen=True)
class TaskPlan:
    task: str
    sample: list[Record]  # the calibration sample
    rest: list[Record]  # everything else, in file order

    @property
    def calibration_job(self) -> str:
        return f"demo-{self.task}-calibration"

    @property
    def live_job(self) -> str:
        return live_job(self.task)

    @property
    def rest_job(self) -> str:
        """The rest as a calibration job: every model alone on the live job's prompts."""
        return f"demo-{self.task}-rest-calibration"

    @property
    def jobs(self) -> tuple[str, str, str]:
        return self.calibration_job, self.live_job, self.rest_job


def live_job(task: str) -> str:
    # Not `demo-<task>`: an earlier demo ran the whole set under that name, and submitting the rest to
    # it would add nothing (same documents), leaving the herd file's run in place of the policy's.
    return f"demo-{task}-rest"


def split(
    task: str, records: Sequence[Record], share: float = CALIBRATION_SHARE, seed: int = SEED
) -> TaskPlan:
    """The seeded calibration sample (the same draw as `herd submit --calibration --sample N --seed S`)
    and the rest. Raises ValueError when either part would be empty."""
    n = round(len(records) * share)
    if not 0 < n < len(records):
        raise ValueError(f"{task}: a {share:.0%} sample of {len(records)} documents leaves a part empty")
    drawn = list(sample(records, n, seed))
    keys = {r.key for r in drawn}
    return TaskPlan(task, drawn, [r for r in records if r.key not in keys])


def plan(jobs: dict[str, Path], share: float = CALIBRATION_SHARE, seed: int = SEED) -> list[TaskPlan]:
    return [split(task, list(documents.read([path])), share, seed) for task, path in jobs.items()]
