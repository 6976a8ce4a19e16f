"""The batch keeper: a thread of `herd serve` that moves batches through OpenAI's lifecycle.

    validating ──▶ in_progress ──▶ finalizing ──▶ completed
        │              │  └── past expires_at ──▶ finalizing ──▶ expired
        ▼              ▼
      failed       cancelling ──▶ cancelled        (cancel: from validating or in_progress)

Every tick it looks at the batches not yet at rest and, per batch, under a Postgres advisory lock (so
replicas of the server never step one batch twice at once):
- `validating`: stream the input file through `submit_batch` into a job named after the batch (one
  transaction: all its requests, or none and `failed` with every bad line in `errors`), publish the
  first messages (herd/housekeeping/sending.py: what the broker refuses is left due, and the next
  housekeeping tick sends it), `in_progress`;
- `in_progress`: `finalizing` once every request has an outcome; past `expires_at`, the requests not
  yet sent fail as expired and it goes to `finalizing` too;
- `cancelling`: the requests not yet sent fail as cancelled at once;
- `finalizing`/`cancelling`: once the requests already at a model have answered (at most
  HERD_API_DRAIN_S; then they fail too), write the output and error files from the ledger
  (herd/batch/export.py), in the same transaction as the final status.
All state is in Postgres and every step is one transaction that checks the status it expects, so a
server killed at any point resumes where it was: a restarted keeper redoes the interrupted step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from herd.api import batches, files
from herd.api.batches import BatchRow
from herd.api.store import FileStore
from herd.batch import export
from herd.batch.format import LineError
from herd.batch.submit import BatchInvalidError, Source, submit_batch
from herd.herdfile.model import HerdConfig
from herd.housekeeping.sending import Publish, send
from herd.input_errors import InputError
from herd.quality.audit import Names

log = logging.getLogger(__name__)

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]
# pg_try_advisory_xact_lock(KEEPER_LOCK, hashtext(batch id)): one keeper steps a batch at a time.
KEEPER_LOCK = 0x68657264  # "herd"
AUDIT_NAMES = Names(rate=f"metadata.{batches.AUDIT_RATE}", reference=f"metadata.{batches.AUDIT_REFERENCE}")


@dataclass(frozen=True)
class Limits:
    window: int  # HERD_DISPATCH_WINDOW
    max_requests: int  # HERD_API_MAX_REQUESTS
    drain_s: float  # HERD_API_DRAIN_S
    stale_after_s: float  # HERD_STALE_AFTER_S: how far back an unsent prompt's enqueued_at goes


class Keeper:
    def __init__(
        self,
        *,
        herd: HerdConfig,
        connect: Connect,
        store: FileStore,
        limits: Limits,
        publish: Publish,
    ) -> None:
        """`connect`: connections in a transaction (committed on a clean exit, as psycopg_pool's are)."""
        self.herd = herd
        self.connect = connect
        self.store = store
        self.limits = limits
        self.publish = publish

    def run(self, stop: threading.Event, poll_s: float) -> None:
        """Tick every `poll_s` seconds until `stop` is set. A failing tick is logged, never fatal: the
        database may be restarting, and the next tick tries again."""
        while not stop.is_set():
            try:
                self.tick()
            except psycopg.OperationalError as exc:
                log.warning("batch keeper: database unavailable (%s); trying again", exc)
            except Exception:  # the keeper outlives any one bad batch; logged with traceback
                log.exception("batch keeper: tick failed")
            stop.wait(poll_s)

    def tick(self) -> dict[str, str]:
        """One pass over the batches not at rest: {batch id: status after its step}."""
        with self.connect() as conn:
            ids = [
                str(row[0])
                for row in conn.execute(
                    "SELECT id FROM api_batches WHERE status = ANY(%s) ORDER BY seq", (list(batches.ACTIVE),)
                )
            ]
        moved = {}
        for batch_id in ids:
            try:
                status = self.step(batch_id)
            except psycopg.OperationalError:
                raise
            except Exception:  # one batch's bug must not stop the others
                log.exception("batch keeper: batch %s", batch_id)
                continue
            if status is not None:
                moved[batch_id] = status
        return moved

    def step(self, batch_id: str) -> str | None:
        """Advance one batch as far as it can go now; its status after, None if another keeper has it."""
        with self.connect() as conn:
            locked = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (KEEPER_LOCK, batch_id)
            ).fetchone()
            if not locked or not locked[0]:
                return None
            batch = batches.get(conn, None, batch_id)
            if batch is None:
                return None
            if batch.status == "validating":
                self._validate(conn, batch)
            elif batch.status == "in_progress":
                self._progress(conn, batch)
            elif batch.status in ("finalizing", "cancelling"):
                self._finish(conn, batch)
        with self.connect() as conn:
            after = batches.get(conn, None, batch_id)
        return after.status if after is not None else None

    def _validate(self, conn: psycopg.Connection, batch: BatchRow) -> None:
        if _job_id(conn, batch.id) is not None:
            # A server that died between committing the job and moving the status: the job is whole.
            _move(conn, batch.id, "validating", "in_progress")
            return
        # FOR SHARE: the file cannot be deleted while it is read (the chunks stream on another connection).
        source = conn.execute(
            "SELECT filename FROM api_files WHERE id = %s AND owner = %s FOR SHARE",
            (batch.input_file_id, batch.owner),
        ).fetchone()
        if source is None:
            message = f"the input file {batch.input_file_id} was deleted before the batch was validated"
            self._fail(conn, batch, [LineError(None, "file_not_found", message)], 1)
            return
        lines = Source(str(source[0]), self.store.read(batch.input_file_id))
        reference = (batch.metadata or {}).get(batches.AUDIT_REFERENCE)
        try:
            result = submit_batch(
                conn,
                self.herd,
                job=batch.id,
                sources=[lines],
                window=self.limits.window,
                endpoint=batch.endpoint,
                max_requests=self.limits.max_requests,
                audit_rate=batches.audit_rate(batch.metadata),
                audit_reference=reference,
                audit_names=AUDIT_NAMES,
            )
        except BatchInvalidError as exc:
            conn.rollback()
            self._fail(conn, batch, exc.errors, exc.total)
            return
        except InputError as exc:
            conn.rollback()
            self._fail(conn, batch, [LineError(None, "invalid_file", str(exc))], 1)
            return
        # Committed by submit_batch: the job and its requests. Messages only after the commit; a broker
        # that refuses them does not stop the batch: they are left due, and the next housekeeping tick
        # (the housekeeper's or a worker's pump) sends them once the broker is back.
        unsent = send(
            self.connect, result.dispatched, stale_after_s=self.limits.stale_after_s, publish=self.publish
        )
        log.info(
            "batch %s: %d requests, %d sent to the queues (%d left to the next housekeeping tick), "
            "%d sampled for its audit",
            batch.id,
            result.read,
            len(result.dispatched) - unsent,
            unsent,
            result.audited,
        )
        _move(conn, batch.id, "validating", "in_progress")  # a cancel meanwhile wins: then nothing moves

    def _fail(self, conn: psycopg.Connection, batch: BatchRow, errors: list[LineError], total: int) -> None:
        data = [error.as_openai() for error in errors]
        if total > len(errors):
            data.append(
                LineError(
                    None, "too_many_errors", f"{total - len(errors)} more lines have errors"
                ).as_openai()
            )
        conn.execute(
            """UPDATE api_batches SET status = 'failed', failed_at = now(), errors = %s
               WHERE id = %s AND status = 'validating'""",
            (Jsonb(data), batch.id),
        )
        conn.commit()
        log.info("batch %s failed validation: %d bad lines", batch.id, total)

    def _progress(self, conn: psycopg.Connection, batch: BatchRow) -> None:
        jid = _job_id(conn, batch.id)
        expired = conn.execute("SELECT now() >= %s", (batch.expires_at,)).fetchone()
        if expired and expired[0]:
            if jid is not None:
                _stop(conn, jid, export.EXPIRED, ("pending", "held"))
            conn.execute(
                """UPDATE api_batches SET status = 'finalizing', finalizing_at = now(), expired_at = now()
                   WHERE id = %s AND status = 'in_progress'""",
                (batch.id,),
            )
        elif jid is None or _unfinished(conn, jid) == 0:
            _move(conn, batch.id, "in_progress", "finalizing")
        else:
            return
        conn.commit()
        refreshed = batches.get(conn, None, batch.id)
        if refreshed is not None and refreshed.status == "finalizing":
            self._finish(conn, refreshed)

    def _finish(self, conn: psycopg.Connection, batch: BatchRow) -> None:
        cancelling = batch.status == "cancelling"
        reason = export.CANCELLED if cancelling else export.EXPIRED
        final = "cancelled" if cancelling else "expired" if batch.expired_at is not None else "completed"
        jid = _job_id(conn, batch.id)
        output_id = error_id = None
        if jid is not None:
            if cancelling:
                _stop(conn, jid, reason, ("pending", "held"))
                conn.commit()
            # The requests already at a model: wait for their answers, up to drain_s since the stop.
            since = batch.cancelling_at if cancelling else batch.expired_at or batch.finalizing_at
            row = conn.execute(
                """SELECT count(*), now() - %s > make_interval(secs => %s)
                   FROM prompts WHERE job_id = %s AND parent_id IS NULL AND state = 'queued'""",
                (since, self.limits.drain_s, jid),
            ).fetchone()
            if row is not None and row[0] and not row[1]:
                return
            if row is not None and row[0]:
                _stop(conn, jid, reason, ("queued",))
            output_id, error_id = self._write_files(conn, batch)
        done = conn.execute(
            f"""UPDATE api_batches
                SET status = %s, {final}_at = now(), output_file_id = %s, error_file_id = %s
                WHERE id = %s AND status = %s""",
            (final, output_id, error_id, batch.id, batch.status),
        )
        if done.rowcount != 1:
            conn.rollback()  # its status changed under us (a cancel while finalizing): the next tick sees it
            return
        conn.commit()
        log.info("batch %s %s", batch.id, final)

    def _write_files(self, conn: psycopg.Connection, batch: BatchRow) -> tuple[str | None, str | None]:
        """The output and error files from the ledger, in this transaction; None for an empty one."""
        names = {False: f"{batch.id}_output.jsonl", True: f"{batch.id}_error.jsonl"}
        ids = {kind: files.new_id() for kind in names}
        writers = {}
        for kind, name in names.items():
            conn.execute(
                "INSERT INTO api_files (id, owner, filename, purpose, bytes) VALUES (%s, %s, %s, %s, 0)",
                (ids[kind], batch.owner, name, files.OUTPUT),
            )
            writers[kind] = self.store.writer(conn, ids[kind])
        for is_error, line in export.lines(conn, batch.id):
            writers[is_error].write(line)
        kept: dict[bool, str | None] = {}
        for kind, writer in writers.items():
            size = writer.close()
            if size:
                conn.execute("UPDATE api_files SET bytes = %s WHERE id = %s", (size, ids[kind]))
                kept[kind] = ids[kind]
            else:
                files.delete(conn, self.store, batch.owner, ids[kind])
                kept[kind] = None
        return kept[False], kept[True]


def _job_id(conn: psycopg.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM jobs WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row else None


def _unfinished(conn: psycopg.Connection, job_id: int) -> int:
    row = conn.execute(
        """SELECT count(*) FROM prompts
           WHERE job_id = %s AND parent_id IS NULL AND state IN ('pending', 'queued', 'held')""",
        (job_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def _stop(conn: psycopg.Connection, job_id: int, reason: str, states: tuple[str, ...]) -> int:
    """Fail the job's requests in `states` with `reason` (the error file's code comes from it), and
    its audit's (herd/quality/audit.py): a cancelled or expired batch spends nothing more on its audit
    either. An answer that arrives later still becomes the prompt's final one in the ledger
    (herd/ledger/steps.py)."""
    return conn.execute(
        """UPDATE prompts SET state = 'failed', finished_at = now(), error = %s
           WHERE job_id IN (SELECT id FROM jobs WHERE id = %s OR audit_of = %s) AND state = ANY(%s)""",
        (reason, job_id, job_id, list(states)),
    ).rowcount


def _move(conn: psycopg.Connection, batch_id: str, status: str, to: str) -> bool:
    moved = conn.execute(
        f"UPDATE api_batches SET status = %s, {to}_at = now() WHERE id = %s AND status = %s",
        (to, batch_id, status),
    ).rowcount
    conn.commit()
    return moved == 1
