"""flex's JSON Schema for devcontainer.json: loading it, validating, and saying what is wrong in one line.

Owns the schema file shipped in the package (``schema/devcontainer.schema.json``; ``devcontainer-schemas/``
at the top of the repository publishes the same file) and the translation of jsonschema's errors into
one :class:`flex.errors.InvalidConfiguration` naming the file, the JSON pointer, the line and column, and
what was expected. Imports nothing from flex but flex.errors (and its sibling jsonc).

Of several problems, the one that comes first in the file is reported: fixing a file top to bottom
then meets the errors in the order a person reads them.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

from flex.devcontainer.jsonc import Document, Position, escape_pointer
from flex.devcontainer.schema_check import conforms
from flex.errors import InvalidConfiguration

__all__ = ["SCHEMA_RESOURCE", "has_source", "load_schema", "schema_text", "validate"]

SCHEMA_RESOURCE = ("flex.devcontainer", "schema/devcontainer.schema.json")

_REFERENCE = "https://containers.dev/implementors/json_reference/"


def schema_text() -> str:
    """The schema exactly as shipped."""
    package, name = SCHEMA_RESOURCE
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


@functools.cache
def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text())
    return schema


@functools.cache
def _validator() -> Any:
    # Imported here: jsonschema (and its referencing machinery) costs ~30 ms, paid only when validating.
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema())


def validate(config: Any, doc: Document, file: str, *, require_source: bool = True) -> None:
    """Raise InvalidConfiguration for the first schema violation in ``config`` (in file order).
    ``require_source=False`` lets a config with no image, build or compose file through (valid for
    attaching to an existing container; the reference CLI reads it)."""
    if conforms(config, load_schema()):  # the usual case, without importing jsonschema (issue 16)
        return
    errors = list(_validator().iter_errors(config))
    if not require_source:
        errors = [e for e in errors if not (e.validator == "anyOf" and not e.absolute_path
                                            and e.validator_value is load_schema()["anyOf"])]
    if not errors:
        return
    problems = [_explain(err) for err in errors]
    pointer, key, message, hint = min(problems, key=lambda p: _order(doc, p[0], p[1]))
    where = doc.position(pointer, key=key) or doc.position(_parent(pointer)) or Position(1, 1)
    shown = pointer or "(top level)"
    raise InvalidConfiguration(
        f"{file}:{where.line}:{where.column}: {shown}: {message}",
        hint=hint,
        details={"file": file, "pointer": pointer, "line": where.line, "column": where.column},
    )


def has_source(config: dict[str, Any]) -> bool:
    """Does the config say how to get its image (image, build, dockerFile or dockerComposeFile)?"""
    return any(k in config for k in ("image", "build", "dockerFile", "dockerComposeFile"))


def _order(doc: Document, pointer: str, key: bool) -> tuple[int, int, int]:
    pos = doc.position(pointer, key=key) or doc.position(_parent(pointer))
    if pos is None:
        return (1 << 30, 0, 0)
    return (pos.line, pos.column, -pointer.count("/"))


def _parent(pointer: str) -> str:
    return pointer.rsplit("/", 1)[0] if "/" in pointer else ""


def _pointer(path: Iterable[Any]) -> str:
    return "".join(f"/{escape_pointer(str(p))}" for p in path)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {_short(value)}"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _types(schema: Any) -> set[str] | None:
    """The JSON types a (sub)schema can accept at its own level; None when it does not say."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema and schema["$ref"].startswith("#/$defs/"):
        return _types(load_schema()["$defs"][schema["$ref"].removeprefix("#/$defs/")])
    if "type" in schema:
        t = schema["type"]
        return set(t) if isinstance(t, list) else {t}
    if "enum" in schema:
        return {_json_type(v) for v in schema["enum"]}
    if "anyOf" in schema:
        out: set[str] = set()
        for alt in schema["anyOf"]:
            sub = _types(alt)
            if sub is None:
                return None
            out |= sub
        return out
    return None


def _branch(err: Any) -> Any | None:
    """For an anyOf error: the one error to explain inside the only alternative of the right type.

    ``{"a": ["x", 1]}`` as a lifecycle command is an object, so the object alternative is the one the
    author meant: report ``/a/1`` there rather than "not any of three forms" at the top.
    """
    kind = _json_type(err.instance)
    fitting = []
    for i, alt in enumerate(err.validator_value):
        types = _types(alt)
        if types is None or kind in types or (kind == "integer" and "number" in types):
            fitting.append(i)
    if len(fitting) != 1:
        return None
    inside = [e for e in err.context if e.relative_schema_path[0] == fitting[0]]
    if not inside:
        return None
    return min(inside, key=lambda e: (-len(e.relative_path), list(map(str, e.relative_path))))


def _explain(err: Any, inherited: str | None = None) -> tuple[str, bool, str, str | None]:
    """(pointer, point at the key?, message, hint) for one jsonschema error."""
    pointer = _pointer(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    expected = schema.get("description")
    kind = err.validator
    got = _type_name(err.instance)
    if kind == "anyOf" and pointer != "":
        inner = _branch(err)
        if inner is not None:
            return _explain(inner, expected or inherited)
    if "propertyNames" in err.relative_schema_path:
        name = str(err.instance)
        return (f"{pointer}/{escape_pointer(name)}", True,
                f"property name {_short(name)} is not {expected or inherited or 'allowed'}", None)
    expected = expected or inherited
    if kind == "additionalProperties":
        known = set(schema.get("properties", {}))
        patterns = schema.get("patternProperties", {})
        extra = [k for k in err.instance if k not in known and not any(re.search(p, k) for p in patterns)]
        name = extra[0] if extra else "?"
        hint = None
        close = difflib.get_close_matches(name, sorted(known), n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif pointer == "":
            hint = f"the properties devcontainer.json may have are listed at {_REFERENCE}"
        return f"{pointer}/{escape_pointer(name)}", True, f"unknown property {name!r}", hint
    if kind == "required":
        missing = next((k for k in err.validator_value if k not in err.instance), "?")
        why = f" ({schema['description']})" if schema.get("description") else ""
        return pointer, False, f"missing property {missing!r}{why}", None
    if kind == "dependentRequired":
        name, needs = next(((k, v) for k, v in schema["dependentRequired"].items() if k in err.instance), ("?", []))
        return f"{pointer}/{escape_pointer(name)}", True, f"{name!r} needs {' and '.join(map(repr, needs))}", None
    if kind == "not":
        return pointer, True, expected or "not allowed here", None
    if kind == "anyOf" and pointer == "" and err.instance is not None and isinstance(err.instance, dict):
        return ("", False, "expected one of image, build (with dockerfile) or dockerComposeFile",
                f"see {_REFERENCE} for the three kinds of configuration")
    if expected:
        return pointer, False, f"expected {expected}, got {got}", None
    if kind == "type":
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        return pointer, False, f"expected {' or '.join(types)}, got {got}", None
    return pointer, False, str(err.message), None
