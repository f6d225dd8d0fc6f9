"""One wording for a request that does not validate, on the server and in the client: where, and what is
expected in words, never a raw regular expression (pydantic's ``String should match pattern '^[a-z0-9]...'``).

    validation_message({"loc": ("name",), "type": "string_pattern_mismatch", "input": "My App",
                        "ctx": {"pattern": NAME_PATTERN}, "msg": "..."})
    == "name: 'My App' is not a valid name: lower-case letters, digits and '-', ..."
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flex.api.environments import ENV_KEY_PATTERN, GIT_PATTERN, LABEL_KEY_PATTERN, NAME_PATTERN

__all__ = ["validation_message"]

_PATTERNS = {
    NAME_PATTERN: "a valid name: lower-case letters, digits and '-', at most 63, starting and ending with a "
                  "letter or digit",
    LABEL_KEY_PATTERN: "a valid label key: [prefix/]name, letters, digits, '-', '_' and '.'",
    ENV_KEY_PATTERN: "a valid variable name: letters, digits and '_', not starting with a digit",
    GIT_PATTERN: "a git URL: https://, ssh://, git://, file:// or git@host:path",
    r"^/": "an absolute path",
}


def validation_message(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        what = _PATTERNS.get(pattern, "in the expected format")
        return f"{where}: {error.get('input')!r} is not {what}"
    return f"{where}: {msg}"
