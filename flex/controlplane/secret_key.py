"""The server's secret key (a 0600 file) and sealing values with it: AES-256-GCM, a random nonce per value,
and the secret's owner and name as associated data, so a ciphertext moved to another row does not open.

The key file is created once, atomically and never readable by others even for a moment (written to an
exclusive 0600 temp file in a 0700 directory, fsynced, then hard-linked into place so that two replicas
starting together end up with one key). Replicas sharing a database must share the key file too.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from flex.errors import FailedPrecondition

__all__ = ["SecretKey"]

_KEY_BYTES = 32
_NONCE_BYTES = 12


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(secrets.token_bytes(_KEY_BYTES)) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):  # another process made one first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink()
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class SecretKey:
    key: bytes = b""
    path: Path | None = None

    def __repr__(self) -> str:  # never the key itself
        return f"SecretKey(id={self.id!r}, path={str(self.path)!r})"

    @classmethod
    def ensure(cls, path: Path) -> SecretKey:
        """The key in ``path``, created on first use; refused if others may read the file."""
        if not path.exists():
            _create(path)
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise FailedPrecondition(f"the secret key file {path} is accessible to others "
                                     f"(mode {stat.S_IMODE(st.st_mode):04o})", hint=f"chmod 600 {path}")
        try:
            key = base64.b64decode(path.read_bytes().strip(), validate=True)
        except ValueError:
            key = b""
        if len(key) != _KEY_BYTES:
            raise FailedPrecondition(f"the secret key file {path} does not hold a {_KEY_BYTES}-byte base64 key",
                                     hint="restore it from your backup; without it stored secrets cannot be read")
        return cls(key, path)

    @property
    def id(self) -> str:
        """Names the key without revealing it (stored next to each value, to tell keys apart)."""
        return hashlib.sha256(b"flex-secret-key:" + self.key).hexdigest()[:16]

    def seal(self, value: str, context: str) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(_NONCE_BYTES)
        return base64.b64encode(nonce + AESGCM(self.key).encrypt(nonce, value.encode(), context.encode())).decode()

    def open(self, sealed: str, context: str, key_id: str) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if key_id != self.id:
            raise FailedPrecondition(f"a secret of {context} was sealed with key {key_id}; this server holds "
                                     f"key {self.id}", hint="give every replica the same secret key file "
                                     "(FLEX_SERVER_SECRET_KEY_FILE)")
        raw = base64.b64decode(sealed)
        try:
            return AESGCM(self.key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except InvalidTag as err:
            raise FailedPrecondition(f"a secret of {context} does not open with this server's key",
                                     hint="it was changed outside flex; set it again") from err
