"""The errors flex shows to people, and the exit code of each.

Imports nothing from flex. Every layer raises these kinds; the control plane maps a kind to an HTTP
status in one handler, ``flex.client`` raises the same class again on the client side, and the CLI maps
a kind to an exit code:

    FlexError(message, *, hint=None, details=None)        exit 1   (HTTP 500)
     ├─ UsageError          bad command-line use           exit 2   (HTTP 400)
     ├─ NotFound                                           exit 3   (HTTP 404)
     ├─ AlreadyExists                                      exit 4   (HTTP 409)
     ├─ Conflict            stale resourceVersion, busy    exit 4   (HTTP 409)
     ├─ Unauthenticated     no or bad credentials          exit 5   (HTTP 401)
     ├─ PermissionDenied                                   exit 5   (HTTP 403)
     ├─ Unavailable         retryable; timeouts too        exit 6   (HTTP 503)
     ├─ InvalidArgument     bad input in a request         exit 7   (HTTP 400/422)
     │   └─ InvalidConfiguration  a devcontainer.json etc. exit 7
     └─ FailedPrecondition  the world is not as required   exit 1   (HTTP 412)

``message`` is one line saying what is wrong and where; ``hint`` says what to do about it;
``details`` carries machine-readable context such as ``{"file": ..., "line": 3, "column": 7}`` or
``{"file": ..., "pointer": "/features/..."}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "EXIT_CODES",
    "AlreadyExists",
    "Conflict",
    "FailedPrecondition",
    "FlexError",
    "InvalidArgument",
    "InvalidConfiguration",
    "NotFound",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
    "UsageError",
    "error_for_kind",
]


class FlexError(Exception):
    """Base of every error flex reports to a person or an API client."""

    kind: ClassVar[str] = "Error"
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = self.details
        return out


class UsageError(FlexError):
    kind = "UsageError"
    exit_code = 2
    http_status = 400


class NotFound(FlexError):
    kind = "NotFound"
    exit_code = 3
    http_status = 404


class AlreadyExists(FlexError):
    kind = "AlreadyExists"
    exit_code = 4
    http_status = 409


class Conflict(FlexError):
    kind = "Conflict"
    exit_code = 4
    http_status = 409


class Unauthenticated(FlexError):
    kind = "Unauthenticated"
    exit_code = 5
    http_status = 401


class PermissionDenied(FlexError):
    kind = "PermissionDenied"
    exit_code = 5
    http_status = 403


class Unavailable(FlexError):
    kind = "Unavailable"
    exit_code = 6
    http_status = 503
    retryable = True


class InvalidArgument(FlexError):
    kind = "InvalidArgument"
    exit_code = 7
    http_status = 400


class InvalidConfiguration(InvalidArgument):
    kind = "InvalidConfiguration"


class FailedPrecondition(FlexError):
    kind = "FailedPrecondition"
    exit_code = 1
    http_status = 412


_ALL: tuple[type[FlexError], ...] = (
    FlexError, UsageError, NotFound, AlreadyExists, Conflict, Unauthenticated, PermissionDenied,
    Unavailable, InvalidArgument, InvalidConfiguration, FailedPrecondition,
)
_BY_KIND: dict[str, type[FlexError]] = {cls.kind: cls for cls in _ALL}

EXIT_CODES: dict[str, int] = {
    "ok": 0, "error": 1, "usage": 2, "not found": 3, "conflict": 4, "auth": 5,
    "unavailable or timeout": 6, "invalid configuration": 7,
}


def error_for_kind(kind: str, message: str, *, hint: str | None = None,
                   details: dict[str, Any] | None = None) -> FlexError:
    """Rebuild the error a server reported (``{"kind", "message", "hint"}``) as the same class."""
    return _BY_KIND.get(kind, FlexError)(message, hint=hint, details=details)
