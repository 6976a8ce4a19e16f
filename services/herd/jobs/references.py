"""What in the ledger names a model or task the current herd file lacks, and the sweep that ends waits
on queues no worker reads. The check itself is herd/herdfile/references.py's `stale_reference`.

- `stale_versions`: active policy and router versions (per task, or all), for `herd status`,
  `herd report`, the metrics exporter and a worker's start (a WARNING line per reference).
- `waiting_at_unknown`: prompts of a job (or all) waiting (`pending`, `queued`, `held`) at a model or
  of a task the herd file does not define.
- `fail_unknown_queued`: the pump's stale sweep fails stale `queued` prompts at a model (or of a task)
  the herd file lacks, with that reason, instead of re-sending them to a queue no worker reads,
  forever. Pending prompts reach `queued` through the dispatch window and are failed there, so each
  sweep reads at most the window (the `ix_prompts_queued` index).
"""

from __future__ import annotations

import json
import logging

import psycopg

from herd.herdfile.model import HerdConfig
from herd.herdfile.references import StaleReference, stale_reference
from herd.ledger.jobs import job_id
from herd.policy.active import stale_policy
from herd.policy.spec import Policy, PolicyError

log = logging.getLogger(__name__)

WAITING = ("pending", "queued", "held")


def stale_versions(
    conn: psycopg.Connection, herd: HerdConfig, task: str | None = None, *, active: bool = True
) -> list[StaleReference]:
    """The active policy and router versions (of `task`, or every task) that name a model or task the
    herd file lacks, policies first, by task. `active=False`: named without "the active" (a version
    just activated in the caller's transaction, to be refused)."""
    found: list[StaleReference] = []
    where, args = ("WHERE a.task = %s", (task,)) if task is not None else ("", ())
    for name, version, text in conn.execute(
        f"""SELECT a.task, p.version, p.text FROM active_policies a JOIN policies p ON p.id = a.policy_id
            {where} ORDER BY a.task""",
        args,
    ).fetchall():
        try:
            models = Policy.from_text(text).models
        except PolicyError:
            continue  # not a reference problem; loading it elsewhere says what is wrong
        ref = stale_policy(herd, str(name), int(version), models, active)
        if ref is not None:
            found.append(ref)
    # Only the router's model list, parsed by Postgres: the whole router may be megabytes of features.
    for name, version, models in conn.execute(
        f"""SELECT a.task, r.version, (r.json::json -> 'models')::text
            FROM active_routers a JOIN routers r ON r.id = a.router_id {where} ORDER BY a.task""",
        args,
    ).fetchall():
        names = [str(m) for m in json.loads(models or "[]")]
        ref = stale_router(herd, str(name), int(version), names, active)
        if ref is not None:
            found.append(ref)
    return found


def stale_router(
    herd: HerdConfig, task: str, version: int, models: list[str], active: bool = True
) -> StaleReference | None:
    """The shared check for the models a router version of `task` routes to: each must be on the task's
    route, since the cascade climbs the route from the entry the router picks."""
    holder = f"{'the active ' if active else ''}router v{version} of task {task!r}"
    hint = f"train a new one, or `herd router deactivate --task {task}`"
    return stale_reference(herd, "router", holder, task, models, route_only=True, hint=hint)


def waiting_at_unknown(
    conn: psycopg.Connection, herd: HerdConfig, job_id: int | None = None
) -> list[StaleReference]:
    """Per (job, task, model, state) with a name the herd file lacks: one StaleReference ("job 'x':
    4 queued prompts names model 'large', ...")."""
    where, args = ("AND p.job_id = %s", (job_id,)) if job_id is not None else ("", ())
    rows = conn.execute(
        f"""SELECT j.name, j.task, p.model, p.state, count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id
            WHERE p.state = ANY(%s) AND (p.model <> ALL(%s) OR j.task <> ALL(%s)) {where}
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4""",
        (list(WAITING), list(herd.models), list(herd.tasks), *args),
    ).fetchall()
    found = []
    for job, task, model, state, count in rows:
        holder = f"job {job!r}: {count} {state} prompt{'s' if count != 1 else ''}"
        ref = stale_reference(herd, "prompts", holder, str(task), [str(model)])
        if ref is not None:
            found.append(ref)
    return found


def fail_unknown_queued(conn: psycopg.Connection, herd: HerdConfig, older_than_s: float) -> int:
    """Fail every prompt `queued` for over `older_than_s` seconds (the stale sweep would re-send it) at a
    model, or of a task, the herd file does not define, with the reason naming it; returns how many.
    Their slots of the dispatch window are free again for the caller's top-up. Runs inside the
    caller's transaction (the pump's).

    Only stale ones: during a rolling change of the herd file a worker still on the old file must not
    fail prompts that workers on the new one are consuming; a prompt nobody consumes goes stale."""
    rows = conn.execute(
        """SELECT p.id, j.task, p.model, p.policy_version FROM prompts p JOIN jobs j ON j.id = p.job_id
           WHERE p.state = 'queued' AND p.enqueued_at < now() - make_interval(secs => %s)
             AND (p.model <> ALL(%s) OR j.task <> ALL(%s))
           FOR UPDATE OF p SKIP LOCKED""",
        (older_than_s, list(herd.models), list(herd.tasks)),
    ).fetchall()
    groups: dict[tuple[str, str, int | None], list[int]] = {}
    for prompt_id, task, model, version in rows:
        groups.setdefault((str(task), str(model), version), []).append(int(prompt_id))
    for (task, model, version), ids in groups.items():
        sent_by = f" (sent there by policy v{version} of task {task!r})" if version is not None else ""
        ref = stale_reference(herd, "prompts", f"the prompt's step{sent_by}", task, [model])
        reason = str(ref) if ref is not None else f"model {model!r} is not in the herd file"
        log.warning("failing %d queued prompt(s): %s", len(ids), reason)
        conn.execute(
            """UPDATE prompts SET state = 'failed', finished_at = now(), error = %s
               WHERE id = ANY(%s) AND state = 'queued'""",
            (reason, ids),
        )
    return len(rows)


def for_job(conn: psycopg.Connection, herd: HerdConfig, job: str) -> list[StaleReference]:
    """What `herd status` and `herd report` show for `job`: its task's stale active versions and its
    prompts waiting at a name the herd file lacks. Raises UnknownJobError for a job that does not exist."""

    jid, task = job_id(conn, job)
    return stale_versions(conn, herd, task) + waiting_at_unknown(conn, herd, jid)
