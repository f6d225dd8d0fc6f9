"""A quick yes/no JSON Schema (2020-12) check for flex's own schemas, so that a valid devcontainer.json never
pays for importing jsonschema (~100 ms: attrs classes, regexes, the metaschemas; issue 16).

    conforms(config, schema) is True   → jsonschema finds no error either: nothing to report
    conforms(config, schema) is False  → jsonschema runs, and says what is wrong and where (schema.py)

Only "no error" is trusted, and it is given only for keywords this module knows; any other keyword, or a
``$ref`` that is not to the schema's own ``$defs``, answers False, so jsonschema decides. ``format`` is an
annotation here as in jsonschema's default (no format checker). tests/devcontainer/test_schema_check.py holds
the two to the same answers. Imports nothing from flex.
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["conforms"]

# keywords that only describe: no bearing on validity
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "deprecated", "examples",
                          "default", "format", "readOnly", "writeOnly", "$defs", "definitions"})

_PROPERTIES = ("properties", "patternProperties", "additionalProperties")


class _Unknown(Exception):
    """A keyword (or reference) this check does not implement: jsonschema decides."""


def conforms(instance: Any, schema: dict[str, Any] | bool) -> bool:
    """True only if ``instance`` is valid against ``schema`` (whose ``$ref``s point into its ``$defs``)."""
    try:
        return _Check(schema).valid(instance, schema)
    except (_Unknown, RecursionError):
        return False


@functools.lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is_type(instance: Any, name: str) -> bool:
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    if name == "string":
        return isinstance(instance, str)
    if name == "boolean":
        return isinstance(instance, bool)
    if name == "null":
        return instance is None
    if isinstance(instance, bool):
        return False
    if name == "number":
        return isinstance(instance, int | float)
    if name == "integer":  # 2020-12: 1.0 is an integer
        return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())
    raise _Unknown(f"type {name!r}")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, [1] is [1.0]."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and \
            all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and \
            all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _number(instance: Any) -> bool:
    return isinstance(instance, int | float) and not isinstance(instance, bool)


class _Check:
    def __init__(self, root: dict[str, Any] | bool) -> None:
        self.root = root

    def _ref(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/$defs/") or not isinstance(self.root, dict):
            raise _Unknown(f"$ref {ref!r}")
        name = ref.removeprefix("#/$defs/")
        defs = self.root.get("$defs")
        if "/" in name or "~" in name or "%" in name or not isinstance(defs, dict) or name not in defs:
            raise _Unknown(f"$ref {ref!r}")
        return defs[name]

    def valid(self, instance: Any, schema: Any) -> bool:  # one branch per keyword
        if schema is True:
            return True
        if schema is False:
            return False
        if not isinstance(schema, dict):
            raise _Unknown("a schema that is neither an object nor a boolean")
        ok = True
        for key, value in schema.items():
            if key in _ANNOTATIONS or key in ("then", "else"):
                continue
            if key == "$ref":
                ok = self.valid(instance, self._ref(value))
            elif key == "type":
                names = value if isinstance(value, list) else [value]
                ok = any(_is_type(instance, n) for n in names)
            elif key == "enum":
                ok = any(_equal(instance, v) for v in value)
            elif key == "const":
                ok = _equal(instance, value)
            elif key in _PROPERTIES:  # the three together, once
                ok = key != next(k for k in _PROPERTIES if k in schema) or self._properties(instance, schema)
            elif key == "propertyNames":
                ok = not isinstance(instance, dict) or all(self.valid(k, value) for k in instance)
            elif key == "required":
                ok = not isinstance(instance, dict) or all(k in instance for k in value)
            elif key == "dependentRequired":
                ok = not isinstance(instance, dict) or all(
                    d in instance for k, deps in value.items() if k in instance for d in deps)
            elif key == "minProperties":
                ok = not isinstance(instance, dict) or len(instance) >= value
            elif key == "maxProperties":
                ok = not isinstance(instance, dict) or len(instance) <= value
            elif key == "items":
                if "prefixItems" in schema:
                    raise _Unknown("prefixItems")
                ok = not isinstance(instance, list) or all(self.valid(i, value) for i in instance)
            elif key == "minItems":
                ok = not isinstance(instance, list) or len(instance) >= value
            elif key == "maxItems":
                ok = not isinstance(instance, list) or len(instance) <= value
            elif key == "minLength":
                ok = not isinstance(instance, str) or len(instance) >= value
            elif key == "maxLength":
                ok = not isinstance(instance, str) or len(instance) <= value
            elif key == "pattern":
                ok = not isinstance(instance, str) or _regex(value).search(instance) is not None
            elif key == "minimum":
                ok = not _number(instance) or instance >= value
            elif key == "maximum":
                ok = not _number(instance) or instance <= value
            elif key == "exclusiveMinimum":
                ok = not _number(instance) or instance > value
            elif key == "exclusiveMaximum":
                ok = not _number(instance) or instance < value
            elif key == "anyOf":
                ok = any(self.valid(instance, s) for s in value)
            elif key == "allOf":
                ok = all(self.valid(instance, s) for s in value)
            elif key == "oneOf":
                ok = sum(1 for s in value if self.valid(instance, s)) == 1
            elif key == "not":
                ok = not self.valid(instance, value)
            elif key == "if":
                branch = schema.get("then" if self.valid(instance, value) else "else", True)
                ok = self.valid(instance, branch)
            else:
                raise _Unknown(f"keyword {key!r}")
            if not ok:
                return False
        return True

    def _properties(self, instance: Any, schema: dict[str, Any]) -> bool:
        """properties, patternProperties and additionalProperties together (the last sees what the first two
        leave)."""
        if not isinstance(instance, dict):
            return True
        props = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extra = schema.get("additionalProperties", True)
        for name, value in instance.items():
            matched = False
            if name in props:
                matched = True
                if not self.valid(value, props[name]):
                    return False
            for pattern, sub in patterns.items():
                if _regex(pattern).search(name) is not None:
                    matched = True
                    if not self.valid(value, sub):
                        return False
            if not matched and not self.valid(value, extra):
                return False
        return True
