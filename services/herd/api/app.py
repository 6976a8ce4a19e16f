"""The ASGI app of `herd serve`: OpenAI's Files and Batches routes over Herd's ledger (Starlette).

    POST   /v1/files                 upload a batch input file (multipart: purpose=batch, file)
    GET    /v1/files                 list the owner's files (after, limit, order, purpose)
    GET    /v1/files/{id}            a File object
    GET    /v1/files/{id}/content    its bytes, streamed
    DELETE /v1/files/{id}
    POST   /v1/batches               create a batch (input_file_id, endpoint, completion_window, metadata)
    GET    /v1/batches               list the owner's batches, newest first (after, limit)
    GET    /v1/batches/{id}          a Batch object, request_counts counted from the ledger
    POST   /v1/batches/{id}/cancel
    GET    /health                   no key needed: the database answers

Every /v1 route needs `Authorization: Bearer <key>` (herd/api/keys.py) and sees only its owner's
objects. Handlers are thin: database work runs in Starlette's thread pool on a psycopg pool connection
(committed when the handler's work returns), the bytes of files stream a chunk at a time both ways.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from herd.api import batches, files, keys
from herd.api.errors import ApiError, bad_request, error_response, not_found
from herd.api.limits import BodyLimit
from herd.api.store import CHUNK_BYTES, FileStore

log = logging.getLogger(__name__)

T = TypeVar("T")
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]
# OpenAI's page sizes: files up to 10,000 (default 10,000), batches up to 100 (default 20).
FILES_PAGE = (10_000, 10_000)
BATCHES_PAGE = (20, 100)


@dataclass(frozen=True)
class ApiContext:
    """What the handlers need: `connect` gives a pooled connection in a transaction, committed when
    the `with` block ends cleanly; `store` holds file bytes."""

    connect: Connect
    store: FileStore
    max_file_bytes: int


def create_app(context: ApiContext, lifespan: Callable[[Starlette], Any] | None = None) -> Starlette:
    """The app over `context`; `lifespan` starts and stops what runs beside it (the keeper)."""

    def db(fn: Callable[..., T], *args: Any) -> Any:
        """Run `fn(conn, *args)` on a pooled connection in Starlette's thread pool."""

        def call() -> T:
            with context.connect() as conn:
                return fn(conn, *args)

        return run_in_threadpool(call)

    async def owner_of(request: Request) -> str:
        auth = await db(keys.authenticate, request.headers.get("authorization"))
        if auth.owner is None:
            raise ApiError(401, auth.problem or "Unauthorized.", code="invalid_api_key")
        return str(auth.owner)

    async def create_file(request: Request) -> Response:
        owner = await owner_of(request)
        async with request.form(max_files=1, max_fields=8) as form:
            purpose, upload = form.get("purpose"), form.get("file")
            if purpose != files.INPUT:
                raise bad_request(
                    f"Herd stores batch input files: purpose must be 'batch', not {purpose!r}", "purpose"
                )
            if not isinstance(upload, UploadFile):
                raise bad_request("the upload needs a `file` part", "file")
            if upload.size is not None and upload.size > context.max_file_bytes:
                # The body limit (herd/api/limits.py) leaves room for the form's framing: this is the file's.
                too_large = f"Request too large: a file may be at most {context.max_file_bytes} bytes"
                raise ApiError(413, too_large, param="file")
            name = upload.filename or "upload.jsonl"

            def store(conn: psycopg.Connection) -> files.FileRow:
                chunks = iter(lambda: upload.file.read(CHUNK_BYTES), b"")
                return files.store_file(
                    conn, context.store, owner=owner, filename=name, purpose=files.INPUT, chunks=chunks
                )

            row: files.FileRow = await db(store)
        return JSONResponse(row.to_openai())

    async def list_files(request: Request) -> Response:
        owner = await owner_of(request)
        query = request.query_params
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request("order must be asc or desc", "order")
        limit = _limit(query.get("limit"), *FILES_PAGE)
        rows, more = await db(
            lambda conn: files.page(
                conn, owner, after=query.get("after"), limit=limit, order=order, purpose=query.get("purpose")
            )
        )
        return _list([r.to_openai() for r in rows], more)

    async def file_object(request: Request) -> Response:
        return JSONResponse((await _file(request)).to_openai())

    async def file_content(request: Request) -> Response:
        row = await _file(request)
        return StreamingResponse(
            iterate_in_threadpool(context.store.read(row.id)),
            media_type="application/octet-stream",
            headers={
                "Content-Length": str(row.bytes),
                "Content-Disposition": f'attachment; filename="{row.filename}"',
            },
        )

    async def delete_file(request: Request) -> Response:
        owner = await owner_of(request)
        file_id = request.path_params["file_id"]

        def delete(conn: psycopg.Connection) -> bool:
            reading = conn.execute(
                """SELECT id FROM api_batches
                   WHERE input_file_id = %s AND owner = %s AND status = 'validating'""",
                (file_id, owner),
            ).fetchone()
            if reading is not None:
                message = f"batch {reading[0]} is reading this file; delete it once it is validated"
                raise ApiError(409, message, param="id")
            return files.delete(conn, context.store, owner, file_id)

        if not await db(delete):
            raise not_found("File", file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    async def _file(request: Request) -> files.FileRow:
        owner = await owner_of(request)
        file_id = request.path_params["file_id"]
        row: files.FileRow | None = await db(files.get, owner, file_id)
        if row is None:
            raise not_found("File", file_id)
        return row

    async def create_batch(request: Request) -> Response:
        owner = await owner_of(request)
        body = await _json_object(request)
        row: batches.BatchRow = await db(batches.create, owner, body)
        return JSONResponse(row.to_openai())

    async def list_batches(request: Request) -> Response:
        owner = await owner_of(request)
        limit = _limit(request.query_params.get("limit"), *BATCHES_PAGE)
        after = request.query_params.get("after")
        rows, more = await db(lambda conn: batches.page(conn, owner, after=after, limit=limit))
        return _list([r.to_openai() for r in rows], more)

    async def batch_object(request: Request) -> Response:
        owner = await owner_of(request)
        batch_id = request.path_params["batch_id"]
        row: batches.BatchRow | None = await db(batches.get, owner, batch_id)
        if row is None:
            raise not_found("Batch", batch_id)
        return JSONResponse(row.to_openai())

    async def cancel_batch(request: Request) -> Response:
        owner = await owner_of(request)
        row: batches.BatchRow = await db(batches.cancel, owner, request.path_params["batch_id"])
        return JSONResponse(row.to_openai())

    async def health(request: Request) -> Response:
        await db(lambda conn: conn.execute("SELECT 1").fetchone())
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/files", create_file, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", file_object, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", batch_object, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyLimit, file_bytes=context.max_file_bytes)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )


def _limit(value: str | None, default: int, most: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise bad_request(f"limit must be a whole number from 1 to {most}", "limit")
    return int(value)


def _list(data: list[dict[str, Any]], has_more: bool) -> Response:
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):  # RecursionError: nested past the stack, a 400 and not a 500
        raise bad_request("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):
        raise exc
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    if exc.status_code == 404:
        return error_response(404, f"Herd serves no {request.method} {request.url.path}")
    return error_response(exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "The server had an error processing your request.", kind="server_error")


@asynccontextmanager
async def no_lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
