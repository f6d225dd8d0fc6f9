"""The base of every wire model (camelCase aliases) and resource quantities ("4Gi" → bytes). No I/O."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["Bytes", "WireModel", "parse_quantity"]

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_quantity(value: Any) -> Any:
    """``"4Gi"`` → 4294967296, ``"512M"`` → 512000000; integers pass through; anything else is left to pydantic."""
    if isinstance(value, str):
        m = _QUANTITY.match(value)
        if m is None:
            raise ValueError(f"{value!r} is not a size (use bytes or a suffix: 512Mi, 4Gi, 10G)")
        return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    return value


Bytes = Annotated[int, BeforeValidator(parse_quantity)]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; both names are accepted on input."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
