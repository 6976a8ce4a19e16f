"""Process settings, read once from the environment (``HERD_*``) and validated up front.

The herd itself (models, tasks, thresholds) lives in the YAML herd file; this holds only what
differs between machines: where the services are and how the plumbing is tuned.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from herd.errors import UserError


class SettingsError(UserError, ValueError):
    """A HERD_* variable with a value Herd cannot use; the message names each variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERD_", extra="ignore")

    # Unset URLs mean "use the embedded Postgres / Redis under `home`" (herd/embedded/servers.py).
    database_url: str | None = None
    broker_url: str | None = None
    herd_file: Path = Path("herd.yaml")
    home: Path = Field(default_factory=lambda: platformdirs.user_data_path("herd"))

    # How many prompts may sit in Redis (queued, not yet finished) at once, across all jobs.
    # The rest wait in Postgres as `pending`, so a million-prompt job never lives in the broker.
    dispatch_window: int = Field(default=2000, ge=1)
    # A prompt `queued` for longer than this without finishing is sent again (a message lost to a
    # crash between commit and publish). Duplicates are harmless: attempts are unique per stage.
    stale_after_s: float = Field(default=900.0, gt=0)
    # Redis redelivers an unacked message after this long. Must exceed the longest task plus its
    # wait in the worker's prefetch, or a long generation would run twice.
    visibility_timeout_s: int = Field(default=3600, ge=1)
    # Set by `herd worker --model M` for its own process: sizes the pool for M, not the herd's largest.
    worker_model: str | None = None
    # How often each worker tops the window up and re-sends stale prompts.
    pump_interval_s: float = Field(default=10.0, gt=0)
    # How long a worker keeps a task's active policy version before reading it again (herd/cascade/
    # active.py): a new version or a rollback reaches every worker within this time.
    policy_ttl_s: float = Field(default=30.0, ge=0)
    # Celery task events (sent/received/started/succeeded), what Flower's task list shows. Off by
    # default, measured (benchmarks/throughput.py, one run): they cost a worker 0.74 ms of CPU
    # per task in bare Celery and 0.91 ms per attempt in Herd (3.19 -> 4.10 ms), plus a `task-sent` event
    # per message published (docs/scale.md).
    # Flower needs none for queue lengths (read from the broker), and Flower itself switches workers'
    # events on while it runs (its --enable_events, default on), so its task list still fills from the
    # moment a task is received. HERD_TASK_EVENTS=1 adds the `sent` events (tasks listed from publish);
    # set it for workers and `herd submit` alike.
    task_events: bool = False
    # Stored cost shares (herd/ledger/shares.py): the pump closes an endpoint's time this many seconds
    # (database clock) behind now. Longer than nearly every request, so late arrivals (which force a
    # rewind) stay rare; short, so the views' open tail, swept per query, stays small. 0 disables.
    cost_share_horizon_s: float = Field(default=300.0, ge=0)

    # Run on a Redis whose maxmemory-policy evicts any key (allkeys-*), which may drop queued messages
    # (herd/brokerpolicy.py); without it, workers, `herd submit` and `herd serve` refuse to start.
    allow_evicting_broker: bool = False

    # Bounds on converting one PDF/DOCX/HTML file (herd/jobs/bounds.py): past any, the file is refused
    # with one `file: reason` line (skipped under `herd submit --skip-unreadable`).
    convert_max_file_bytes: int = Field(default=256 * 1024**2, ge=1)
    convert_max_expanded_bytes: int = Field(default=256 * 1024**2, ge=1)
    convert_max_ratio: float = Field(default=100.0, gt=1)
    convert_max_pages: int = Field(default=10_000, ge=1)
    convert_timeout_s: float = Field(default=120.0, ge=0)  # 0: no time bound

    # `herd serve`, the OpenAI Files and Batches API (herd/api/, docs/batch-api.md).
    # Where files live: "postgres" (chunks in the ledger's database: nothing else to run or back up, and
    # every replica of the server sees them) or a directory path shared by every replica.
    api_file_store: str = "postgres"
    # The largest upload, in bytes (2 GiB; OpenAI's own limit for a batch file is 200 MB).
    api_max_file_bytes: int = Field(default=2 * 1024**3, ge=1024)
    # The most requests one batch may hold (OpenAI's: 50,000). Validation streams, so this bounds a
    # batch's time in `validating`, not memory.
    api_max_requests: int = Field(default=1_000_000, ge=1)
    # How often the server moves its batches along (validate, finalize, cancel, expire).
    api_poll_s: float = Field(default=1.0, gt=0)
    # A cancelled or expired batch waits this long for the requests already at a model (OpenAI: up to 10
    # minutes), then writes its files without them.
    api_drain_s: float = Field(default=600.0, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; SettingsError, one line per bad variable, naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(
            "\n".join(
                f"HERD_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']} (got {e['input']!r})"
                for e in exc.errors()
            )
        ) from None
