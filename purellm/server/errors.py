"""Every error leaves the server as OpenAI's `{"error": {message, type, param, code}}`."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from purellm.server.protocol import ErrorInfo, ErrorResponse

log = logging.getLogger("purellm.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    499: "client_closed_request",
    500: "internal_server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """Raised anywhere in a handler; becomes an error response with this status."""

    def __init__(
        self, status: int, message: str, param: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers
        """Extra response headers, e.g. Retry-After on a 503."""


def busy(message: str) -> APIError:
    """A 503 that clients should retry (OpenAI's SDKs honour Retry-After)."""
    return APIError(503, message, headers={"Retry-After": "1"})


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param)


def error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = _TYPES.get(status, HTTPStatus(status).phrase.replace(" ", "_").lower())
    info = ErrorInfo(message=message, type=kind, param=param, code=status)
    return ErrorResponse(error=info).model_dump()


def error_response(
    status: int, message: str, param: str | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status, headers=headers)


def sse_error(exc: BaseException) -> str:
    """An error in the middle of a stream: one `data:` event with the error body."""
    status, message = classify(exc)
    return f"data: {json.dumps(error_body(status, message))}\n\n"


def classify(exc: BaseException) -> tuple[int, str]:
    """(status, message) for an exception raised while serving a request."""
    if isinstance(exc, APIError):
        return exc.status, exc.message
    if isinstance(exc, ValueError):
        return 400, str(exc)
    if type(exc).__name__ == "EngineDeadError":
        return 503, str(exc)
    log.error("internal error while serving a request", exc_info=exc)
    return 500, f"internal server error: {type(exc).__name__}: {exc}"


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return f"malformed JSON: {first.get('msg')}", None
    if not loc and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return "the request body must be a JSON object (Content-Type: application/json)", None
    where = ".".join(loc)
    message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more errors)"
    return message, where or None


class CatchAll:
    """ASGI middleware: an exception no handler took becomes an OpenAI-shaped 500 here, inside
    Starlette's ServerErrorMiddleware, which would answer and then re-raise it, so uvicorn
    logged it twice and closed the keep-alive connection. Once a response has started (a
    stream) the exception goes on up: the stream generators report errors in-band."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            status, message = classify(exc)
            await error_response(status, message)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError) -> JSONResponse:
        return error_response(400, str(exc))

    app.add_middleware(CatchAll)
