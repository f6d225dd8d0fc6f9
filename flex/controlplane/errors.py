"""One place that turns errors into RFC 9457 problem+json answers, with flex's own {kind, message, hint}.

    {"type": "https://flex.dev/problems/not-found", "title": "Not Found", "status": 404,
     "detail": "environment 'e1' not found", "instance": "/api/v1/environments/e1",
     "kind": "NotFound", "message": "environment 'e1' not found", "hint": null,
     "error": {"kind": "NotFound", "message": "...", "hint": null}}

flex.client reads ``kind``/``message``/``hint`` back into the same flex.errors class.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from flex.errors import FlexError, InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable

__all__ = ["PROBLEM_RESPONSES", "Problem", "ProblemError", "RateLimited", "TooLarge", "Unprocessable", "error_response",
           "install",
           "problem_body", "problem_response"]

log = logging.getLogger("flex.controlplane")
PROBLEM_TYPE = "application/problem+json"


class TooLarge(InvalidArgument):
    http_status = 413


class RateLimited(Unavailable):
    http_status = 429


class ProblemError(BaseModel):
    kind: str
    message: str
    hint: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, plus flex's error kind."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    kind: str
    message: str
    hint: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    error: ProblemError


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def problem_body(err: FlexError, status: int, instance: str | None) -> dict[str, Any]:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {
        "type": f"https://flex.dev/problems/{_slug(title)}", "title": title, "status": status,
        "detail": err.message, "instance": instance, "kind": err.kind, "message": err.message, "hint": err.hint,
        "details": err.details, "error": {"kind": err.kind, "message": err.message, "hint": err.hint},
    }


def problem_response(err: FlexError, instance: str | None = None, status: int | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    code = status or err.http_status
    return JSONResponse(problem_body(err, code, instance), status_code=code, media_type=PROBLEM_TYPE,
                        headers=headers)


_PROBLEM = {"model": Problem, "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {**_PROBLEM, "description": HTTPStatus(code).phrase}
    for code in (400, 401, 403, 404, 409, 410, 412, 413, 422, 429)
}


def _where(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def error_response(err: FlexError, instance: str | None) -> JSONResponse:
    """The answer to a FlexError, with the headers its kind calls for."""
    headers = {"WWW-Authenticate": 'Bearer realm="flex"'} if isinstance(err, Unauthenticated) else None
    if isinstance(err, RateLimited):
        headers = {"Retry-After": "60"}
    return problem_response(err, instance, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(FlexError)
    async def _flex(request: Request, err: FlexError) -> JSONResponse:
        return error_response(err, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = list(err.errors())
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        from flex.api.validation import validation_message

        details = {"errors": [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg"))} for e in errors]}
        flex_err = InvalidArgument(validation_message(first), details=details,
                                   hint="docs/api.md (or GET /openapi.json) describes the request format")
        return problem_response(flex_err, request.url.path, status=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        flex_err: FlexError
        if err.status_code == 404:
            flex_err = NotFound(f"no such path: {request.url.path}")
        elif err.status_code in (401,):
            flex_err = Unauthenticated(str(err.detail))
        elif err.status_code == 403:
            flex_err = PermissionDenied(str(err.detail))
        else:
            flex_err = InvalidArgument(str(err.detail))
        return problem_response(flex_err, request.url.path, status=err.status_code,
                                headers=dict(err.headers or {}) or None)

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return problem_response(FlexError(f"internal error: {type(err).__name__}"), request.url.path)


class Unprocessable(InvalidArgument):
    """A well-formed request whose content is invalid (422), like FastAPI's own validation errors."""

    http_status = 422
