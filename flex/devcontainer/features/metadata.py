"""devcontainer-feature.json: parsed (JSONC, like the reference), validated against the schema shipped in
``flex/devcontainer/schema/devcontainer-feature.schema.json`` (published in devcontainer-schemas/), with
the first problem reported as one line naming the file, the field, the line and the column.

Feature files are untrusted input (a registry or a repository wrote them): size-limited, and nothing in
them is run here; ``id`` is checked against a strict pattern because it names folders and layers.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from flex.devcontainer.jsonc import Document, JSONCSyntaxError, Position, escape_pointer, parse
from flex.devcontainer.schema_check import conforms
from flex.errors import InvalidConfiguration

__all__ = ["FEATURE_FILE", "FEATURE_SCHEMA_RESOURCE", "MAX_FEATURE_JSON", "feature_schema", "parse_feature_json"]

FEATURE_FILE = "devcontainer-feature.json"
FEATURE_SCHEMA_RESOURCE = ("flex.devcontainer", "schema/devcontainer-feature.schema.json")
MAX_FEATURE_JSON = 1 << 20


@functools.cache
def feature_schema() -> dict[str, Any]:
    package, name = FEATURE_SCHEMA_RESOURCE
    schema: dict[str, Any] = json.loads(resources.files(package).joinpath(name).read_text(encoding="utf-8"))
    return schema


@functools.cache
def _validator() -> Any:
    import jsonschema  # ~30 ms: paid only when a feature is read

    return jsonschema.Draft202012Validator(feature_schema())


def _pointer(path: Any) -> str:
    return "".join(f"/{escape_pointer(str(p))}" for p in path)


def _explain(err: Any) -> tuple[str, bool, str]:
    pointer = _pointer(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties":
        known = set(schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in known)
        name = extra[0] if extra else "?"
        return f"{pointer}/{escape_pointer(name)}", True, f"unknown property {name!r}"
    if err.validator == "required":
        missing = next((k for k in err.validator_value if k not in err.instance), "?")
        return pointer, False, f"missing property {missing!r}"
    if "propertyNames" in err.relative_schema_path:
        return f"{pointer}/{escape_pointer(str(err.instance))}", True, \
            f"{str(err.instance)!r} is not {schema.get('description', 'a valid name')}"
    if schema.get("description"):
        return pointer, False, f"expected {schema['description']}, got {json.dumps(err.instance)[:60]}"
    return pointer, False, str(err.message)


def parse_feature_json(text: str, shown: str) -> dict[str, Any]:
    """Parse and validate a devcontainer-feature.json given as text; ``shown`` names it in errors."""
    if len(text) > MAX_FEATURE_JSON:
        raise InvalidConfiguration(f"{shown}: larger than {MAX_FEATURE_JSON >> 20} MiB", details={"file": shown})
    try:
        doc = parse(text)
    except JSONCSyntaxError as err:
        raise InvalidConfiguration(f"{shown}:{err.line}:{err.column}: {err.message}",
                                   details={"file": shown, "line": err.line, "column": err.column}) from err
    _validate(doc, shown)
    value: dict[str, Any] = doc.value
    for name, opt in (value.get("options") or {}).items():
        default = opt.get("default")
        if default is not None and type(default).__name__ != {"string": "str", "boolean": "bool"}[opt["type"]]:
            _fail(doc, shown, f"/options/{escape_pointer(name)}/default", False,
                  f"the default of a {opt['type']} option must be a {opt['type']}")
    return value


def _validate(doc: Document, shown: str) -> None:
    if conforms(doc.value, feature_schema()):  # without importing jsonschema (flex/devcontainer/schema_check.py)
        return
    errors = list(_validator().iter_errors(doc.value))
    if not errors:
        return
    problems = [_explain(e) for e in errors]

    def order(p: tuple[str, bool, str]) -> tuple[int, int]:
        pos = doc.position(p[0], key=p[1]) or doc.position(p[0].rsplit("/", 1)[0])
        return (pos.line, pos.column) if pos else (1 << 30, 0)

    pointer, key, message = min(problems, key=order)
    _fail(doc, shown, pointer, key, message)


def _fail(doc: Document, shown: str, pointer: str, key: bool, message: str) -> None:
    where = doc.position(pointer, key=key) or doc.position(pointer.rsplit("/", 1)[0]) or Position(1, 1)
    raise InvalidConfiguration(
        f"{shown}:{where.line}:{where.column}: {pointer or '(top level)'}: {message}",
        hint="see https://containers.dev/implementors/features/ for the properties a feature may have",
        details={"file": shown, "pointer": pointer, "line": where.line, "column": where.column})
