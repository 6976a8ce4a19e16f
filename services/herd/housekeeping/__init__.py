"""Housekeeping: the periodic work no single step does, in one place.

- `sending`: publish after the commit, and leave whatever was not sent due at the next tick.
- `work`: one tick of it (re-send stale prompts, top the dispatch window up, release idle budget
  jobs; fill the stored cost shares and seal finished jobs), used by every worker's pump
  (opportunistically) and by `herd housekeeper`.
- `leader`: the housekeeper's leader lock (a Postgres session advisory lock).
- `service`: `herd housekeeper`, the process that does it whether or not any worker runs, with its
  health check and Prometheus metrics.
"""
