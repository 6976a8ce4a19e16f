"""Every way a request to the API fails, in OpenAI's error shape, so the official SDK raises its own
exception for each (AuthenticationError for 401, NotFoundError for 404, ...):

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

- 400 `invalid_request_error`: a bad field (`param` names it);
- 401 `invalid_request_error`, code `invalid_api_key`: no key, a wrong key or a revoked key;
- 404 `invalid_request_error`: no such file or batch *for this key's owner* (another owner's is
  invisible, never 403);
- 409 `invalid_request_error`: the object's state forbids the request (cancel a completed batch);
- 413 `invalid_request_error`: a body over the server's limit;
- 500 `server_error`: a bug, logged with its traceback; the body says only that.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from herd.errors import UserError


class ApiError(UserError):
    """A request the API refuses: its HTTP `status` and OpenAI's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code, kind=self.kind)


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    kind: str = "invalid_request_error",
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def not_found(what: str, object_id: str) -> ApiError:
    return ApiError(404, f"No such {what}: {object_id}", param="id")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)
