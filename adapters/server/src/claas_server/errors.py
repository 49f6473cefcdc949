"""The one place where errors become HTTP responses.

Every error body has OpenAI's shape, so the official client raises the right
``openai.APIStatusError`` subclass with a readable message::

    {"error": {"type": "not_found_error", "message": "...", "param": null,
               "code": "adapter_not_found"}}

Core exceptions map by class (the most specific class in the exception's MRO
wins) to an HTTP status and an OpenAI error type; the ``code`` is the core's
own (:func:`claas.errors.error_code`), so clients decode it with the same
table (:func:`claas.errors.error_for_code`). The one exception is back-pressure:
:class:`~claas.errors.QueueFull` is OpenAI's rate-limit answer (429, type
``requests``, code ``rate_limit_exceeded``, a ``Retry-After`` header), which the
``openai`` client retries on its own. FastAPI's request validation
errors and Starlette's HTTP exceptions are rewritten to the same shape. Server
errors (5xx) never echo internal messages, which may hold file paths or backend
URLs; they are logged instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from claas.errors import (
    BackendUnavailable,
    ClaasError,
    Conflict,
    InvalidRequest,
    MissingDependency,
    NonFiniteUpdate,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    StorageError,
    TrainingError,
    UpdateRejected,
    error_code,
)
from claas_server.schemas import ErrorResponse

__all__ = [
    "ERROR_RESPONSES",
    "QUEUE_FULL_RESPONSE",
    "RATE_LIMIT_CODE",
    "RETRY_AFTER_SECONDS",
    "Unauthorized",
    "describe",
    "error_body",
    "error_response",
    "exception_response",
    "install_error_handlers",
    "public_message",
    "status_for",
    "wire_code",
]

log = logging.getLogger("claas_server")


class Unauthorized(Exception):
    """No API key, or an unknown one, was presented (HTTP 401).

    Server-only: the core has no notion of credentials.
    """


# Core exception class -> (HTTP status, OpenAI error type). Looked up along the MRO.
_CORE_STATUS: Mapping[type[BaseException], tuple[int, str]] = {
    PayloadTooLarge: (413, "invalid_request_error"),
    InvalidRequest: (400, "invalid_request_error"),
    NotFound: (404, "not_found_error"),
    Conflict: (409, "conflict_error"),
    QueueFull: (429, "requests"),
    PermissionDenied: (403, "permission_error"),
    NonFiniteUpdate: (422, "unprocessable_entity_error"),
    UpdateRejected: (422, "unprocessable_entity_error"),
    TrainingError: (500, "server_error"),
    BackendUnavailable: (503, "service_unavailable_error"),
    StorageError: (500, "server_error"),
    MissingDependency: (503, "service_unavailable_error"),
    ClaasError: (500, "server_error"),
    Unauthorized: (401, "authentication_error"),
}

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
    503: "service_unavailable_error",
}

RATE_LIMIT_CODE = "rate_limit_exceeded"
"""OpenAI's code of a 429, the wire code of :class:`~claas.errors.QueueFull`."""
RETRY_AFTER_SECONDS = 5
"""What ``Retry-After`` of a 429 says: a small fixed estimate of when a queue slot frees."""

_PUBLIC_5XX = {
    BackendUnavailable: "the serving backend is unavailable; retry later",
    MissingDependency: "this server lacks an optional dependency for that request",
    TrainingError: "the update could not be computed; nothing was published",
    StorageError: "the adapter store or records database failed",
}


def status_for(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and OpenAI error type of an exception (500 if unknown)."""
    for cls in type(exc).__mro__:
        if cls in _CORE_STATUS:
            return _CORE_STATUS[cls]
    return 500, "server_error"


def error_body(
    message: str, type_: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """Build ``{"error": {"type", "message", "param", "code"}}``."""
    return {"error": {"type": type_, "message": message, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response in OpenAI's shape."""
    kind = type_ or _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "error")
    return JSONResponse(
        error_body(message, kind, code=code, param=param),
        status_code=status,
        headers=dict(headers or {}),
    )


def wire_code(exc: BaseException) -> str:
    """The ``code`` of an exception's body: the core's, but OpenAI's for a 429."""
    return RATE_LIMIT_CODE if isinstance(exc, QueueFull) else error_code(exc)


def public_message(exc: BaseException) -> str:
    """What a response may say about ``exc``: its message, or a fixed text for a 5xx."""
    status, _ = status_for(exc)
    if status >= 500:
        return next(
            (text for cls, text in _PUBLIC_5XX.items() if isinstance(exc, cls)),
            "internal server error",
        )
    return str(exc) or error_code(exc)


def describe(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and error body of an exception (5xx bodies say nothing internal)."""
    status, kind = status_for(exc)
    if status >= 500:
        log.error("request failed with %s", type(exc).__name__, exc_info=exc)
    return status, error_body(public_message(exc), kind, code=wire_code(exc))


def _headers(status: int) -> dict[str, str] | None:
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if status in (429, 503):  # a full queue, or a backend or the records database down
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return None


def exception_response(exc: BaseException) -> JSONResponse:
    """The response for a core (or server) exception."""
    status, body = describe(exc)
    return JSONResponse(body, status_code=status, headers=_headers(status))


def _validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    first = errors[0].get("loc", ()) if errors else ()
    param = ".".join(str(p) for p in first if p != "body") or None
    return "; ".join(parts) + more, param


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    message, param = _validation_message(errors)
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, f"the body is not valid JSON: {message}", code="invalid_json")
    return error_response(422, message or "invalid request", code="validation_error", param=param)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(exc.status_code, detail, headers=exc.headers)


async def _on_core(request: Request, exc: Exception) -> JSONResponse:
    return exception_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the OpenAI-style body."""
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(ClaasError, _on_core)
    app.add_exception_handler(Unauthorized, _on_core)
    app.add_exception_handler(Exception, _on_core)


_DOCUMENTED = {
    400: "Malformed request (invalid adapter id, config, messages or JSON)",
    401: "Missing or unknown API key",
    403: "The key may not use this adapter's namespace",
    404: "Unknown adapter, version, completion or route",
    405: "Method not allowed on this route",
    409: "Conflicts with the current state (the adapter exists)",
    413: "Body, prompt, feedback or batch over a configured limit",
    422: "Body fails the schema, or the update diverged",
    429: "Too many feedback jobs wait (per adapter or in all); retry after `Retry-After`",
    503: "Serving backend unavailable",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "model": ErrorResponse}
    for status, text in _DOCUMENTED.items()
    if status != 429
}
"""Error responses documented on every API route."""

QUEUE_FULL_RESPONSE: dict[int | str, dict[str, Any]] = {
    429: {
        "description": _DOCUMENTED[429],
        "model": ErrorResponse,
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before submitting again.",
                "schema": {"type": "integer"},
            }
        },
    }
}
"""The 429 of the routes that submit feedback jobs, with its ``Retry-After`` header."""
