"""Names derived from other names (a home's cgroup parent and bridge, a container's veth, MAC and socket).

A sha256 of the name, by CPython's own implementation: hashlib's loads OpenSSL's libcrypto, ~2-5 ms of every
`flex runtime run`, for a few bytes of input. Same digest either way. Imports nothing from flex.
"""

from __future__ import annotations

from typing import Any

__all__ = ["name_digest"]

try:  # CPython 3.11 (_sha256) and 3.12+ (_sha2); anything else: hashlib
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        from hashlib import sha256 as _sha256  # type: ignore[assignment,unused-ignore]

_new: Any = _sha256


def name_digest(name: str | bytes) -> bytes:
    """The sha256 digest of ``name`` (str: UTF-8)."""
    data = name.encode() if isinstance(name, str) else name
    digest: bytes = _new(data).digest()
    return digest
