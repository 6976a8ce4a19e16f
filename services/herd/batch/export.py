"""A job's answers as OpenAI batch output and error files, read from the ledger.

One line per finished request, in submission order; nothing is kept anywhere else, so the same ledger
always gives the same lines (ids are hashes of the job and the request's `custom_id`, times are the
answers' own), and a crashed writer loses nothing. `herd export --format openai-batch` and the API
server's output files (herd/api/keeper.py) both come from `lines`.

An output line (a request that got its final answer):
    {"id": "batch_req_<h>", "custom_id": ..., "error": null,
     "response": {"status_code": 200, "request_id": "req_<h>", "body": <chat.completion | text_completion>},
     "herd": {...}}
The body is what OpenAI returns: `model` is the herd model that gave the final answer, `usage` that
answer's tokens, `logprobs` only when the request asked for them. An error line (a request that failed,
was cancelled or expired) has `"response": null` and `"error": {"code", "message"}`.

`herd` is Herd's own extension, beside the fields OpenAI defines (its SDK and vLLM's parser keep
unknown fields): `job`, `models` (every model that answered, in order: the escalation path),
`escalations`, `cost_usd` (the attributed GPU cost of all its attempts when the line was written:
docs/cost-model.md; the `attempt_costs` view has the final figure), `policy_version` and
`router_version` (None: the herd file decided).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

import psycopg

from herd.cascade.requests import COMPLETIONS, REQUEST
from herd.ledger.jobs import job_id

# prompts.error of a request a batch stopped before it finished (herd/api/keeper.py writes them).
CANCELLED = "batch cancelled before this request finished"
EXPIRED = "batch expired before this request finished"
_CODES = {CANCELLED: "batch_cancelled", EXPIRED: "batch_expired"}
# The server's finish reasons in OpenAI's words (TGI says eos_token/stop_sequence).
_FINISH = {"length": "length"}

_LINES = f"""
    WITH path AS (
        SELECT a.prompt_id,
               array_agg(a.model ORDER BY a.id) FILTER (WHERE a.stage = 'answer') AS models,
               count(*) FILTER (WHERE a.escalated) AS escalations
        FROM attempts a JOIN prompts p ON p.id = a.prompt_id
        WHERE p.job_id = %(job)s
        GROUP BY a.prompt_id),
    cost AS (
        SELECT prompt_id, sum(cost_usd) AS cost_usd FROM attempt_costs WHERE job_id = %(job)s
        GROUP BY prompt_id)
    SELECT p.doc_key, p.state, p.error, p.fields #>> '{{{REQUEST},url}}', p.policy_version,
           p.router_version, f.model, f.answer, a.prompt_tokens, a.generated_tokens, a.finish_reason,
           a.logprobs, a.finished_at, path.models, path.escalations, cost.cost_usd
    FROM prompts p
    LEFT JOIN finals f ON f.prompt_id = p.id
    LEFT JOIN attempts a ON a.id = f.attempt_id
    LEFT JOIN path ON path.prompt_id = p.id
    LEFT JOIN cost ON cost.prompt_id = p.id
    WHERE p.job_id = %(job)s AND p.parent_id IS NULL AND p.state IN ('done', 'failed')
    ORDER BY p.id"""


@dataclass(frozen=True)
class Counts:
    outputs: int = 0
    errors: int = 0
    unfinished: int = 0


def lines(conn: psycopg.Connection, job: str) -> Iterator[tuple[bool, bytes]]:
    """(is an error line, the line with its newline) for every finished request of `job`, in
    submission order, streamed with a server-side cursor (flat memory for any size). Raises
    UnknownJobError for a job that does not exist. Needs a transaction (a named cursor lives in one)."""
    jid, _ = job_id(conn, job)
    with conn.cursor(name="herd_batch_export") as cur:
        cur.itersize = 2000
        cur.execute(_LINES, {"job": jid})
        for row in cur:
            error, line = _line(job, row)
            yield error, (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def unfinished(conn: psycopg.Connection, job: str) -> int:
    """Requests of `job` without an outcome yet (pending, queued or held)."""
    jid, _ = job_id(conn, job)
    row = conn.execute(
        """SELECT count(*) FROM prompts
           WHERE job_id = %s AND parent_id IS NULL AND state NOT IN ('done', 'failed')""",
        (jid,),
    ).fetchone()
    return int(row[0]) if row else 0


def write(conn: psycopg.Connection, job: str, output: IO[bytes], errors: IO[bytes] | None) -> Counts:
    """`herd export --format openai-batch`: output lines to `output`, error lines to `errors` (None:
    counted, not written)."""
    outputs = failed = 0
    with conn.transaction():
        for is_error, line in lines(conn, job):
            if is_error:
                failed += 1
                if errors is not None:
                    errors.write(line)
            else:
                outputs += 1
                output.write(line)
        left = unfinished(conn, job)
    return Counts(outputs, failed, left)


def _hash(job: str, custom_id: str) -> str:
    return hashlib.sha256(f"{job}\0{custom_id}".encode()).hexdigest()[:32]


def _line(job: str, row: tuple[Any, ...]) -> tuple[bool, dict[str, Any]]:
    (
        custom_id,
        state,
        error,
        url,
        policy_version,
        router_version,
        model,
        answer,
        prompt_tokens,
        generated_tokens,
        finish_reason,
        logprobs,
        finished_at,
        models,
        escalations,
        cost,
    ) = row
    h = _hash(job, custom_id)
    herd = {
        "job": job,
        "models": list(models or []),
        "escalations": int(escalations or 0),
        "cost_usd": float(cost) if isinstance(cost, Decimal) else 0.0,
        "policy_version": policy_version,
        "router_version": router_version,
    }
    base = {"id": f"batch_req_{h}", "custom_id": custom_id}
    if state != "done" or answer is None:
        message = error or "the request failed"
        code = _CODES.get(message, "request_failed")
        return True, {**base, "response": None, "error": {"code": code, "message": message}, "herd": herd}
    body = _body(h, url, model, answer, prompt_tokens, generated_tokens, finish_reason, logprobs, finished_at)
    response = {"status_code": 200, "request_id": f"req_{h}", "body": body}
    return False, {**base, "response": response, "error": None, "herd": herd}


def _body(
    h: str,
    url: str | None,
    model: str,
    answer: str,
    prompt_tokens: int | None,
    generated_tokens: int | None,
    finish_reason: str | None,
    logprobs: Any,
    finished_at: datetime,
) -> dict[str, Any]:
    prompt = int(prompt_tokens or 0)  # a server that reports no count: 0, as the SDK's type needs an int
    completion = int(generated_tokens or 0)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    finish = _FINISH.get(finish_reason or "", "stop")
    common = {"created": int(finished_at.timestamp()), "model": model}
    if url == COMPLETIONS:
        choice = {"index": 0, "text": answer, "logprobs": logprobs, "finish_reason": finish}
        return {"id": f"cmpl-{h}", "object": "text_completion", **common, "choices": [choice], "usage": usage}
    message = {"role": "assistant", "content": answer}
    choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
    return {
        "id": f"chatcmpl-{h}",
        "object": "chat.completion",
        **common,
        "choices": [choice],
        "usage": usage,
        "system_fingerprint": None,
    }
