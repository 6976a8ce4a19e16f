"""Fault injection: a 3-tier herd under injected faults, and whether Herd's delivery guarantees hold.

    python -m benchmarks.faults [--prompts 1000] [--short] [--seed 1] [--json OUT] [--keep]
                                [--no-partition] [--no-empty-redis]

The scenario (docs/reliability.md, which has the latest figures), everything on 127.0.0.1 under a
private, temporary HERD_HOME (benchmarks/_lib/faults_run.py):

* An embedded Postgres and Redis (herd/embedded/servers.py) started for the run, so the suite may kill
  them: never the machine's own servers (HERD_DATABASE_URL / HERD_BROKER_URL are ignored).
* Three endpoint doubles, one per model, out of process (tests/support/faulty.py): small (OpenAI chat)
  -> medium (TGI) -> large (OpenAI completions). Each call draws, seeded, 5% HTTP 424, 5% 5xx, 3% 429,
  2% malformed 200 bodies and 2% hangs past the client's timeout; the others answer after --latency
  seconds. About 60% of the prompts are confident on small, 25% on medium, 15% reach large.
* One `herd worker` per model, supervised: a worker that exits for any reason is restarted.
* `herd submit` of the prompts, then, each at a seeded random point of the job's progress (between 5% and
  90% of the prompts finished, so the faults hit a running job on a fast or a slow machine): workers
  SIGKILLed (their whole process group; the last kill, the last fault, at 90%), Redis SIGKILLed and
  restarted, Postgres (the postmaster) SIGKILLed and restarted, and one model's double (medium)
  SIGKILLed and restarted on the same port after 60 seconds (8 with --short). Redis and Postgres stay
  down a few seconds each, never both at once. Redis is also restarted with no data, twice, the
  second time just as the stale sweep is due; and every worker runs in a network namespace that is
  cut off from Redis and Postgres for 30 seconds (10 with --short; skipped, saying why, without root,
  `ip` or `socat`): benchmarks/_lib/faults_netns.py.
* Short plumbing periods so the run drains in minutes (printed with the figures): HERD_STALE_AFTER_S,
  HERD_VISIBILITY_TIMEOUT_S, HERD_PUMP_INTERVAL_S and a dispatch window small enough that no prompt
  waits in Redis for a whole stale period.

It prints prompts lost (neither done nor failed once drained), duplicate finals and duplicate attempts
per step, model calls beyond one per step (calls the doubles received against attempts recorded and
their retries), failures grouped by reason, errors and tracebacks in the worker logs, and the time from
the end of the last fault to the drained job. Goal: 0 lost, 0 duplicate finals, every failure with a
reason, drained within one stale period of the last fault. If the job has not drained by the deadline
it stops and prints what is stuck (states, steps, queue lengths) instead. Exit status: 0 when every goal
holds, 1 when one does not, 2 when not drained by the deadline, 130 on Ctrl-C. Every process it starts
is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from benchmarks._lib.entry import run, work_dir
from benchmarks._lib.faults_plan import SHORT, Plan
from benchmarks._lib.faults_run import FaultReport, run_suite


def plan_lines(plan: Plan) -> list[str]:
    return [
        f"fault suite: {plan.prompts} prompts, seed {plan.seed}; HERD_STALE_AFTER_S={plan.stale_after_s:g}, "
        f"HERD_VISIBILITY_TIMEOUT_S={plan.visibility_timeout_s}, "
        f"HERD_PUMP_INTERVAL_S={plan.pump_interval_s:g}, HERD_DISPATCH_WINDOW={plan.dispatch_window} "
        "(short on purpose, so the run drains in minutes)",
        f"  doubles: latency {plan.latency_s}s, faults per call {plan.faults}, hangs {plan.hang_s}s; "
        f"models: timeout {plan.timeout_s}s, retries {plan.retries} (backoff {plan.backoff_s}s..."
        f"{plan.backoff_max_s}s), max_in_flight {plan.max_in_flight}",
        f"  Redis restarted empty (twice, the second at a due stale sweep): {plan.empty_redis}; "
        f"workers partitioned from Redis and Postgres for {plan.partition_s:g}s (0: no partition)",
    ]


def report_lines(res: FaultReport) -> list[str]:
    plan, led, calls, logs = res.plan, res.ledger, res.calls, res.logs
    out = ["\n== faults (seconds after submit; prompts neither done nor failed at that moment) =="]
    for ev in sorted(res.events, key=lambda e: e.fired_at if e.fired_at is not None else 1e9):
        when = "never" if ev.fired_at is None else f"t={ev.fired_at:6.1f}s"
        open_ = "" if ev.open_prompts is None else f" [{ev.open_prompts} open]"
        out.append(f"  {when}  {ev.action:<15}{ev.note}{open_}")
    out += [f"  SKIPPED {why}" for why in res.skipped]
    if res.unexpected_exits:
        out.append("  workers that exited by themselves (restarted): " + "; ".join(res.unexpected_exits))
    out.append(f"  worker starts per model: {res.worker_starts}")
    if not res.drained:
        out.append(f"\n== NOT DRAINED after {plan.deadline_s:.0f}s: what is stuck ==")
        out.append(json.dumps(res.stuck, indent=2, default=str))
    out += [
        "\n== figures ==",
        f"  prompts: {plan.prompts}; states at the end: {led.states}; finals by model: {led.finals_by_model}",
        f"  prompts lost (neither done nor failed): {res.lost}",
        f"  most prompts queued at once (polled every 0.5s): {res.max_queued} "
        f"(HERD_DISPATCH_WINDOW {plan.dispatch_window})",
        f"  duplicate finals (prompt with > 1 final): {led.duplicate_finals}",
        f"  duplicate attempts (> 1 per prompt, model, stage, round): {led.duplicate_attempts}",
        f"  done without a final / final on a prompt not done: {led.done_without_final} / "
        f"{led.final_not_done}",
        f"  model calls: {calls.calls_total} received by the doubles {calls.calls}, "
        f"{calls.attempts_total} attempts recorded {calls.attempts}",
        f"  model calls beyond one per step: {calls.calls_beyond_one_per_step}; of these, retries recorded "
        f"on the attempts: {calls.retries_total} ({calls.retries_not_reaching_endpoint} never reached a "
        f"double: endpoint down); beyond the step and its recorded retries (wasted GPU): "
        f"{calls.calls_beyond_step_and_retries}, {calls.calls_for_steps_without_attempt} of them for steps "
        "with no attempt recorded",
    ]
    out += [f"    faults drawn by {model}'s double: {drawn}" for model, drawn in calls.faults_drawn.items()]
    out.append(
        f"  failed prompts: {led.states.get('failed', 0)}; without a reason: {led.failed_without_reason}"
    )
    out += [f"    {n:5d}  {reason}" for reason, n in led.failure_reasons.items()]
    out.append(f"  worker logs: {logs.tracebacks} tracebacks; task exceptions (Celery 'raised unexpected'):")
    out += [f"    {n:5d}  {exc}" for exc, n in logs.task_exceptions.items()]
    if logs.error_lines:
        out.append("  other ERROR/CRITICAL log lines (top 15):")
        out += [f"    {n:5d}  {line}" for line, n in logs.error_lines.items()]
    drained = f"t={res.drained_at_s:.1f}s" if res.drained_at_s is not None else "never"
    out.append(f"  last fault ended at t={res.last_fault_s:.1f}s; job drained at {drained}")
    if res.drain_after_last_fault_s is not None:
        out.append(
            f"  time from the last fault to a drained job: {res.drain_after_last_fault_s:.1f}s "
            f"(stale period {plan.stale_after_s:.0f}s; "
            f"{res.open_at_last_fault} prompts open at the last fault)"
        )
    out.append(
        "  the last prompts to finish (attempts: model status retries start..end, seconds after submit):"
    )
    out += [f"    {line}" for line in led.last_finished]
    out.append("\n== goals ==")
    out += [f"  {'PASS' if ok else 'FAIL'}  {goal}" for goal, ok in res.goals.items()]
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--short", action="store_true", help="the CI version: 150 prompts, shorter faults")
    p.add_argument("--prompts", type=int, help="default 1000 (150 with --short)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--latency", type=float, help="seconds per successful model call in the doubles")
    p.add_argument("--deadline", type=float, help="seconds after submit before reporting what is stuck")
    p.add_argument("--no-partition", action="store_true", help="without the network partition")
    p.add_argument("--no-empty-redis", action="store_true", help="without the Redis that restarts empty")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep HERD_HOME with every log (work/ in it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    plan = replace(SHORT) if args.short else Plan()
    plan.seed = args.seed
    if args.prompts is not None:
        plan.prompts = args.prompts
    if args.latency is not None:
        plan.latency_s = args.latency
    if args.deadline is not None:
        plan.deadline_s = args.deadline
    if args.no_partition:
        plan.partition_s = 0.0
    if args.no_empty_redis:
        plan.empty_redis = False
    started = time.monotonic()
    print("\n".join(plan_lines(plan)), flush=True)
    with work_dir("herd-faults-", keep=args.keep) as home:
        res = run_suite(plan, home, lambda line: print(line, flush=True))
    print("\n".join(report_lines(res)))
    print(f"\nwhole run (start to stop of every process): {time.monotonic() - started:.1f}s")
    if args.json:
        args.json.write_text(json.dumps(asdict(res), indent=2, default=str))
    if not res.drained:
        return 2
    return 0 if all(res.goals.values()) else 1


if __name__ == "__main__":
    run(main)
