"""A feature's options: the user's values checked against devcontainer-feature.json's ``options``, merged
with the defaults, and written as the ``devcontainer-features.env`` install.sh reads.

As the reference CLI: a string or boolean given instead of an object sets the ``version`` option when the
feature has one; names become ``getSafeId``'d upper-case variables; values are written in double quotes,
booleans as ``true``/``false``. Stricter than the reference (which passes anything through): an unknown
option, a value of the wrong type, or one outside an ``enum`` is an error naming the feature and option.
"""

from __future__ import annotations

import re
from typing import Any

from flex.errors import InvalidConfiguration

__all__ = ["options_env", "resolve_options", "safe_id"]

_UNSAFE = re.compile(r"[^\w_]", re.ASCII)
_LEADING = re.compile(r"^[\d_]+")


def safe_id(name: str) -> str:
    """The spec's option-name → variable-name rule (``option-name`` → ``OPTION_NAME``, ``1name`` → ``_NAME``)."""
    return _LEADING.sub("_", _UNSAFE.sub("_", name), count=1).upper()


def resolve_options(feature: dict[str, Any], value: Any, user_id: str) -> dict[str, str | bool]:
    """The options install.sh gets: defaults, overridden by the user's (checked) values."""
    declared: dict[str, Any] = feature.get("options") or {}
    out: dict[str, str | bool] = {}
    for name, opt in declared.items():
        if "default" in opt:
            out[name] = opt["default"]
    if isinstance(value, str | bool):
        value = {"version": value} if "version" in declared else {}
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidConfiguration(f"feature {user_id!r}: options must be an object, a string or a boolean")
    for name, given in value.items():
        opt = declared.get(name)
        where = f"feature {user_id!r}: option {name!r}"
        if opt is None:
            known = ", ".join(sorted(declared)) or "none"
            raise InvalidConfiguration(f"{where}: not an option of this feature (its options: {known})",
                                       details={"pointer": f"/features/{user_id}/{name}"})
        want = opt.get("type")
        if want == "boolean" and not isinstance(given, bool):
            if isinstance(given, str) and given in ("true", "false"):
                given = given == "true"
            else:
                raise InvalidConfiguration(f"{where}: expected true or false, got {given!r}")
        if want == "string":
            if isinstance(given, bool | int | float) and not isinstance(given, str):
                given = ("true" if given else "false") if isinstance(given, bool) else str(given)
            if not isinstance(given, str):
                raise InvalidConfiguration(f"{where}: expected a string, got {given!r}")
            if "enum" in opt and given not in opt["enum"]:
                raise InvalidConfiguration(f"{where}: {given!r} is not one of {', '.join(map(repr, opt['enum']))}")
        out[name] = given
    return out


def _render(v: str | bool) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else v


def options_env(options: dict[str, str | bool]) -> str:
    """devcontainer-features.env: ``NAME="value"`` lines joined by newlines, no trailing newline, values not
    escaped: exactly what the reference writes, so install.sh sees the same values (``$`` expands when the
    wrapper sources the file, under both). The config's author already runs code in the build: no boundary
    is crossed here."""
    return "\n".join(f'{safe_id(name)}="{_render(value)}"' for name, value in options.items())
