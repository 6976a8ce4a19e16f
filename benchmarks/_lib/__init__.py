"""What the benchmarks share; not a benchmark itself (`python -m benchmarks` lists those).

- `timing`: `timed(fn, repeat)`, the one way a benchmark times a piece of work in process.
- `cpu`: CPU seconds of processes (workers, doubles, Postgres, Redis) and of the machine over an interval.
- `baseline`: `--baseline-src DIR`, another checkout's Herd run beside this one in the same run.
- `render`: the figure tables and the machine-state line every benchmark prints.
- `entry`: running an entry module's `main` (SIGTERM and Ctrl-C stop every process it started).
- `workload`: the prompt and record files benchmarks submit, and waiting for a job to finish.
- `submit`: `herd.jobs.submit.submit()` timed in a child process, as the CLI calls it.
- `synthetic_ledger`: a large synthetic ledger loaded inside Postgres.
- `bare_celery`, `bare`, `herd_run`, `profile`: throughput's parts (the bare Celery app and its run, a
  Herd run, py-spy on the worker).
- `faults_plan`, `faults_run`, `faults_figures`: the fault-injection run, its plan, and what it reads
  from the ledger and the logs.

Services, herd files, process starting and worker readiness are the tests' own harness
(tests/support/harness.py): the benchmarks use it as the tests do.
"""
