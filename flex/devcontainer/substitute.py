"""Variable substitution in devcontainer.json: the host phase (before a container exists).

Owns replacing ``${...}`` in every string value (never in keys) the way the reference CLI does:
one left-to-right pass over ``\\${(.*?)}``, the name split on ``:``, replacements not scanned again.

    ${localEnv:VAR} ${env:VAR}            the host's variable, "" when unset
    ${localEnv:VAR:default}               ... or the default (text after a further ':' is dropped)
    ${localWorkspaceFolder}               the workspace folder on the host (absolute)
    ${localWorkspaceFolderBasename}       its last path component
    ${containerWorkspaceFolder}           the workspace folder in the container
    ${containerWorkspaceFolderBasename}   its last path component
    ${devcontainerId}                     stable id of (workspace folder, config file); see config.py

Anything else (``${containerEnv:PATH}``, unknown names) is left as written: ``${containerEnv:...}`` is
resolved at container time, by whoever runs processes in the container. flex substitutes
``${devcontainerId}`` here already, where the reference CLI waits for a container; the value is the
same. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flex.devcontainer.jsonc import escape_pointer
from flex.errors import InvalidConfiguration

__all__ = ["HostContext", "substitute", "substitute_string"]

# JavaScript's "." (the reference's /\$\{(.*?)\}/g) stops at \n, \r, U+2028 and U+2029; Python's only at \n.
_VARIABLE = re.compile(r"\$\{([^\n\r\u2028\u2029]*?)\}")


@dataclass(frozen=True)
class HostContext:
    """What the host phase knows. A None field leaves its variables as written."""

    env: Mapping[str, str]
    local_workspace_folder: str | None = None
    container_workspace_folder: str | None = None
    devcontainer_id: str | None = None
    config_file: str | None = None


def substitute_string(text: str, ctx: HostContext, *, pointer: str = "") -> str:
    """Replace the host-phase variables in one string."""

    def replace(match: re.Match[str]) -> str:
        whole, inner = match.group(0), match.group(1)
        name, *args = inner.split(":")
        if name in ("localEnv", "env"):
            if not args:
                raise InvalidConfiguration(
                    f"{whole!r} can not be resolved because no environment variable name is given",
                    hint="write ${localEnv:NAME} or ${localEnv:NAME:default}",
                    details={"file": ctx.config_file, "pointer": pointer},
                )
            value = ctx.env.get(args[0])
            if isinstance(value, str):
                return value
            return args[1] if len(args) > 1 else ""
        if name == "localWorkspaceFolder" and ctx.local_workspace_folder is not None:
            return ctx.local_workspace_folder
        if name == "localWorkspaceFolderBasename" and ctx.local_workspace_folder is not None:
            return posixpath.basename(ctx.local_workspace_folder)
        if name == "containerWorkspaceFolder" and ctx.container_workspace_folder is not None:
            return ctx.container_workspace_folder
        if name == "containerWorkspaceFolderBasename" and ctx.container_workspace_folder is not None:
            return posixpath.basename(ctx.container_workspace_folder)
        if name == "devcontainerId" and ctx.devcontainer_id is not None:
            return ctx.devcontainer_id
        return whole

    return _VARIABLE.sub(replace, text)


def substitute(value: Any, ctx: HostContext) -> Any:
    """A copy of ``value`` with every string substituted; keys and non-strings are kept."""
    return _walk(value, "", lambda text, pointer: substitute_string(text, ctx, pointer=pointer))


def _walk(value: Any, pointer: str, fn: Callable[[str, str], str]) -> Any:
    if isinstance(value, str):
        return fn(value, pointer)
    if isinstance(value, list):
        return [_walk(v, f"{pointer}/{i}", fn) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _walk(v, f"{pointer}/{escape_pointer(k)}", fn) for k, v in value.items()}
    return value
