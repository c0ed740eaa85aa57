"""Map every failure to OpenAI's error envelope ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from underlay.api.context import request_id_var
from underlay.api.errors import PayloadTooLargeError, UnderlayError
from underlay.shared.redact import MAX_TEXT, redact

log = logging.getLogger("underlay.server")

_MAX_PATH_SHOWN = 256
"""Characters of a request path quoted in an error message; the rest is cut with a marker."""

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def envelope(
    status: int,
    message: str,
    error_type: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The envelope; a message over ``MAX_TEXT`` characters (it may quote what the client sent) is cut."""
    if len(message) > MAX_TEXT:
        message = f"{message[:MAX_TEXT]}… [cut: {len(message)} characters in all]"
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": error_type, "param": param, "code": code}},
        headers=headers,
    )


def masked_envelope(exc: UnderlayError) -> dict[str, Any]:
    """The error's envelope with secrets masked in its message: a provider's error text can quote a key
    or a URL with a password, and the client must not see it."""
    body = exc.to_envelope()
    body["error"]["message"] = redact(str(body["error"]["message"]))
    return body


def error_response(exc: UnderlayError) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content=masked_envelope(exc), headers=exc.headers or None)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``('body', 'messages', 0, 'content')`` → ``messages[0].content``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or part.startswith("function-") or part.startswith("union")):
            continue  # pydantic's internal union branch labels say nothing to a user
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = errors[0]
    param = field_path(first.get("loc", ())) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "The request body is not valid JSON; send a JSON object.", None
    if kind == "missing" and param is None:
        return "The request body is missing; send a JSON object.", None
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    if kind == "union_tag_not_found":  # pydantic's "Unable to extract tag using discriminator" names no field
        field = str((first.get("ctx") or {}).get("discriminator", "type")).strip("'")
        where = f"{param}.{field}" if param else field
        return f"Missing required parameter: '{where}' (it says which kind of object this is).", where
    message = str(first.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if param:
        message = f"Invalid value for '{param}': {message}."
    more = len(errors) - 1
    if more > 0:
        message += f" ({more} more problem{'s' if more > 1 else ''} in the request.)"
    return message, param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UnderlayError)
    async def _underlay(_: Request, exc: UnderlayError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return envelope(400, message, "invalid_request_error", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, PayloadTooLargeError):
            return error_response(exc.__cause__)
        path = redact(request.url.path, _MAX_PATH_SHOWN)  # a client's path can be 64 KiB long
        if exc.status_code == 404:
            message = f"No route {request.method} {path}; GET /v1/inspect/routes lists them."
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {path}."
        else:
            message = str(exc.detail)
        return envelope(
            exc.status_code,
            message,
            _HTTP_TYPES.get(exc.status_code, "server_error"),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        request_id = request_id_var.get()
        log.exception("unhandled error (request %s)", request_id)
        return envelope(
            500,
            f"Internal server error (request id {request_id}); the server log has the details.",
            "server_error",
        )
