"""How one replica proves to another that it is a replica of this control plane (issue 15).

Replicas on one database already share the secret key file (flex/controlplane/secret_key.py); a link key is
derived from it (HMAC, so the secret key itself never leaves the process), and a replica opening a link sends
``Authorization: FlexReplica <unix time>.<replica id>.<HMAC of both>``. A value older or newer than
``SKEW`` seconds is refused, so one seen in a log stops working within a minute. No user's token crosses.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from flex.controlplane.secret_key import SecretKey

__all__ = ["SCHEME", "SKEW", "ReplicaKey"]

SCHEME = "FlexReplica"
SKEW = 60.0


class ReplicaKey:
    def __init__(self, key: SecretKey) -> None:
        self._key = hmac.new(key.key, b"flex replica link v1", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "ReplicaKey(...)"

    def _sign(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def authorization(self, replica_id: str) -> str:
        message = f"{int(time.time())}.{replica_id}"
        return f"{SCHEME} {message}.{self._sign(message)}"

    def check(self, header: str) -> str | None:
        """The calling replica's id, if ``header`` is a fresh, valid value; else None."""
        scheme, _, value = header.partition(" ")
        if scheme != SCHEME:
            return None
        stamp, _, rest = value.strip().partition(".")
        replica_id, _, signature = rest.rpartition(".")
        if not stamp.isdigit() or not replica_id or abs(time.time() - int(stamp)) > SKEW:
            return None
        if not hmac.compare_digest(signature, self._sign(f"{stamp}.{replica_id}")):
            return None
        return replica_id
