"""An OpenAI batch file stored as a Herd job, all or nothing: `herd submit` and the API server's
validation both run `submit_batch`.

Lines stream from their source (a file, or the API's file store) through the checks into `herd submit`'s
COPY (herd/jobs/submit.py), so memory stays flat for any size. Every line is checked; a line that fails
is recorded as a LineError and reading goes on, so one pass names every bad line (up to MAX_ERRORS);
at the end any error aborts the whole submit, and the caller's transaction rolls back: nothing is
half-written. The first good line's `body.model` decides the job's route (herd/batch/routes.py); every
other line must name the same one, as OpenAI requires one model per batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg

from herd.batch import format as batch_format
from herd.batch import routes
from herd.batch.format import BatchLine, LineError, LineProblem
from herd.cascade import requests
from herd.herdfile.model import HerdConfig, ModelConfig
from herd.input_errors import InputError
from herd.jobs.documents import Record
from herd.jobs.submit import DuplicateIdsError, SubmitResult, submit
from herd.quality import audit as job_audit

# Line errors kept for the report; the count goes on past it.
MAX_ERRORS = 100


@dataclass(frozen=True)
class Source:
    """A batch file to read: its name in messages, and its bytes in chunks."""

    name: str
    chunks: Iterable[bytes]


class BatchInvalidError(InputError):
    """A batch file with bad lines: nothing was stored. `errors` (at most MAX_ERRORS, in file order)
    name line and field; `total` counts every bad line. `str()` is Herd's one error, a line per problem."""

    def __init__(self, errors: list[tuple[str, LineError]], total: int) -> None:
        self.errors = [error for _, error in errors]
        self.total = total
        shown = [error.where(source) for source, error in errors[:10]]
        more = total - len(shown)
        tail = [f"... and {more} more bad line(s)"] if more > 0 else []
        super().__init__("\n".join(shown + tail))


@dataclass
class _Reader:
    """The checked records of the sources, in order; a bad line becomes an entry of `errors`."""

    herd: HerdConfig
    sources: list[Source]
    endpoint: str | None
    max_requests: int | None
    errors: list[tuple[str, LineError]] = field(default_factory=list)
    bad: int = 0
    read: int = 0
    target: routes.Target | None = None
    first_model: str = ""
    models: list[ModelConfig] = field(default_factory=list)

    def lines(self) -> Iterator[tuple[str, int, bytes]]:
        for source in self.sources:
            for number, raw in batch_format.numbered_lines(source.chunks):
                yield source.name, number, raw

    def problem(self, source: str, error: LineError) -> None:
        self.bad += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((source, error))

    def records(self, lines: Iterator[tuple[str, int, bytes]]) -> Iterator[Record]:
        for source, number, raw in lines:
            self.read += 1
            if self.max_requests is not None and self.read > self.max_requests:
                message = f"a batch holds at most {self.max_requests} requests"
                self.problem(source, LineError(number, "too_many_requests", message))
                break
            try:
                yield self.record(source, batch_format.parse(number, raw))
            except LineProblem as exc:
                self.problem(source, exc.error)

    def record(self, source: str, line: BatchLine) -> Record:
        def problem(message: str, param: str | None, code: str = "invalid_value") -> LineProblem:
            return LineProblem(LineError(line.line, code, message, param))

        if self.endpoint is not None and line.url != self.endpoint:
            raise problem(f"`url` is {line.url}, but the batch's endpoint is {self.endpoint}", "url")
        try:
            target = routes.resolve(self.herd, line.model)
        except routes.UnknownModelError as exc:
            raise problem(str(exc), "body.model", "model_not_found") from None
        if self.target is None:
            self.target, self.first_model = target, line.model
            self.models = routes.models_of(self.herd, target)
        elif target != self.target:
            raise problem(
                f"model {line.model!r} ({target.describe()}) differs from the batch's first request, "
                f"{self.first_model!r} ({self.target.describe()}): one batch runs one route",
                "body.model",
            )
        try:
            checked = requests.check(line.url, line.body, self.models)
        except requests.RequestError as exc:
            param = f"body.{exc.param}" if exc.param and exc.param != "url" else exc.param
            raise problem(str(exc), param, exc.code) from None
        return Record(
            key=line.custom_id,
            text=checked.text,
            reference=None,
            fields=checked.fields(),
            source=f"{source}:{line.line}",
        )

    def first(self) -> tuple[Iterator[Record], routes.Target]:
        """The records, with the route of the first good one (read ahead). Raises BatchInvalidError
        when no line is good."""
        records = self.records(self.lines())
        first = next(records, None)
        if first is not None and self.target is not None:  # a record always has its target
            return itertools.chain([first], records), self.target
        if self.bad:
            raise self.invalid()
        names = ", ".join(s.name for s in self.sources)
        raise BatchInvalidError([(names, LineError(None, "empty_file", "the file has no requests"))], 1)

    def invalid(self) -> BatchInvalidError:
        return BatchInvalidError(self.errors, self.bad)

    def checked(self, records: Iterator[Record]) -> Iterator[Record]:
        """`records`, then the verdict: raises BatchInvalidError after the last one if any line was bad,
        so the caller's COPY fails and its transaction rolls back."""
        yield from records
        if self.bad:
            raise self.invalid()


def submit_batch(
    conn: psycopg.Connection,
    herd: HerdConfig,
    *,
    job: str,
    sources: list[Source],
    window: int,
    endpoint: str | None = None,
    max_requests: int | None = None,
    progress: Callable[[int], None] = lambda n: None,
    calibration: bool = False,
    budget_usd: Decimal | None = None,
    audit_rate: float | None = None,
    audit_reference: str | None = None,
    audit_names: job_audit.Names = job_audit.OPTIONS,
) -> SubmitResult:
    """Store the requests of `sources` as job `job` and claim its first dispatches (the caller publishes
    them after this returns: the submit has committed).

    `endpoint`: the URL every line must have (an API batch's `endpoint`); None takes both
    `/v1/chat/completions` and `/v1/completions`. `max_requests`: a cap on the lines. `calibration`:
    every model of the route answers every prompt (herd/cascade/pipeline.py); `budget_usd`: the job's
    cap (herd/policy/job_budget.py). `audit_rate`, `audit_reference`: the job's audit (herd/quality/audit.py,
    `resolve`: None takes the herd file's `audit:`, which applies to a batch for a task's cascade as to
    any live job; `audit_names` name them in errors). Raises BatchInvalidError (every bad line, by file
    and line) or InputError; then nothing is committed and the caller rolls back."""
    reader = _Reader(herd, sources, endpoint, max_requests)
    records, target = reader.first()
    if calibration and target.model is not None:
        raise InputError(f"a calibration job runs a route's every model: {reader.first_model!r} names one")
    kind = "calibration" if calibration else target.kind
    audit = job_audit.resolve(herd, target.task, audit_rate, audit_reference, kind, audit_names)
    try:
        return submit(
            conn,
            herd,
            job=job,
            task=target.task,
            records=reader.checked(records),
            window=window,
            progress=progress,
            kind=kind,
            budget_usd=budget_usd,
            entry=target.model,
            inputs=[s.name for s in sources],
            audit=audit,
        )
    except DuplicateIdsError as exc:
        errors = [
            (
                where.rsplit(":", 1)[0],
                LineError(
                    _line(where),
                    "duplicate_custom_id",
                    f"custom_id {key!r} appears more than once",
                    "custom_id",
                ),
            )
            for key, places in exc.duplicates
            for where in sorted(places, key=lambda w: (w.rsplit(":", 1)[0], _line(w) or 0))[1:]
        ]
        raise BatchInvalidError(errors, len(errors)) from None


def _line(where: str) -> int | None:
    number = where.rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else None
