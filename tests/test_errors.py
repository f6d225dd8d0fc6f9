"""The error tree: kinds, exit codes and HTTP statuses are a contract with scripts and API clients."""

from __future__ import annotations

import pytest

from flex import errors


@pytest.mark.parametrize(
    ("cls", "exit_code", "http_status"),
    [
        (errors.FlexError, 1, 500),
        (errors.UsageError, 2, 400),
        (errors.NotFound, 3, 404),
        (errors.AlreadyExists, 4, 409),
        (errors.Conflict, 4, 409),
        (errors.Unauthenticated, 5, 401),
        (errors.PermissionDenied, 5, 403),
        (errors.Unavailable, 6, 503),
        (errors.InvalidArgument, 7, 400),
        (errors.InvalidConfiguration, 7, 400),
        (errors.FailedPrecondition, 1, 412),
    ],
)
def test_each_kind_has_its_documented_codes(cls: type[errors.FlexError], exit_code: int, http_status: int) -> None:
    err = cls("what went wrong", hint="what to do")
    assert isinstance(err, errors.FlexError)
    assert err.exit_code == exit_code
    assert err.http_status == http_status


def test_a_reported_error_is_rebuilt_as_the_same_class() -> None:
    original = errors.Conflict("environment 'e1' changed", hint="read it again", details={"resourceVersion": 7})
    body = original.to_dict()
    again = errors.error_for_kind(body["kind"], body["message"], hint=body.get("hint"), details=body.get("details"))
    assert type(again) is errors.Conflict
    assert (again.message, again.hint, again.details) == (original.message, original.hint, original.details)


def test_an_unknown_kind_still_becomes_a_flex_error() -> None:
    err = errors.error_for_kind("SomethingNew", "from a newer server")
    assert type(err) is errors.FlexError
    assert str(err) == "from a newer server"


def test_only_unavailable_is_retryable() -> None:
    kinds = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.FlexError)]
    assert {c for c in kinds if c.retryable} == {errors.Unavailable}
