"""Request size limits, as ASGI middleware: an upload (POST /v1/files) may be up to HERD_API_MAX_FILE_BYTES,
any other request body up to JSON_BYTES. A declared Content-Length over the limit is refused before
a byte is read; a body that grows past it while streaming (chunked, or a lying header) is cut off
there. Either way the answer is 413 in OpenAI's error shape, and nothing is stored: the upload's
transaction never began, or rolls back."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herd.api.errors import error_response
from herd.errors import UserError

# Batch creation and cancel bodies are a few hundred bytes; metadata adds at most ~10 KB.
JSON_BYTES = 1024 * 1024
# Multipart framing around the file: boundaries, the `purpose` field, part headers.
FORM_OVERHEAD = 64 * 1024


class BodyTooLargeError(UserError):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, *, file_bytes: int, json_bytes: int = JSON_BYTES) -> None:
        self.app = app
        self.file_bytes = file_bytes
        self.json_bytes = json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/files"
        limit = self.file_bytes + FORM_OVERHEAD if upload else self.json_bytes
        what = f"a file may be at most {self.file_bytes} bytes" if upload else f"at most {limit} bytes"
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(413, f"Request too large: {what}")(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLargeError:
            if started:
                raise
            await error_response(413, f"Request too large: {what}")(scope, receive, send)
