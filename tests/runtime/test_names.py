"""Names derived from names (flex/runtime/base/names.py) stay what they were: running containers' cgroup
parents, bridges and veths were named with hashlib's sha256."""

from __future__ import annotations

import hashlib

from flex.runtime.base.names import name_digest


def test_name_digest_is_hashlibs_sha256() -> None:
    for name in ("", "/var/lib/flex", "/var/tmp/x/home", "é/ü", "a" * 1000):
        assert name_digest(name) == hashlib.sha256(name.encode()).digest()
    assert name_digest(b"mac:abc") == hashlib.sha256(b"mac:abc").digest()
