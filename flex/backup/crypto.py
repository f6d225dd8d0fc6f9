"""Keys and sealing: what makes a repository private and tamper-evident. Imports nothing from flex but flex.errors.

A repository has one master key (32 bytes for AES-256-GCM, 32 bytes for the keyed BLAKE3 chunk ids, a
chunker seed), stored only wrapped: each ``keys/<id>`` file holds it sealed under a key derived from a
password with scrypt. Every object is ``nonce(12) || AES-GCM(ciphertext || tag)`` with associated data
naming what the object is (a blob's type and id, or ``b"index"``), so an object moved to another name or
role fails to open.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from flex.errors import FailedPrecondition, PermissionDenied

__all__ = ["MasterKey", "SealError", "unwrap_key", "wrap_key"]

NONCE = 12
OVERHEAD = NONCE + 16
# scrypt N=2^15, r=8, p=1: ~0.1 s and 32 MiB, what restic uses on a laptop.
KDF = {"n": 1 << 15, "r": 8, "p": 1}


class SealError(FailedPrecondition):
    """An object did not authenticate: damaged, truncated, or not from this repository."""


@dataclass(frozen=True)
class MasterKey:
    encrypt: bytes
    mac: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> MasterKey:
        # pyfastcdc takes a seed that alternates its gear table; a secret one keeps chunk boundaries
        # (and so file sizes) from being fingerprinted across repositories.
        return cls(secrets.token_bytes(32), secrets.token_bytes(32), secrets.randbits(31) | 1)

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """The keyed hash that names a blob: equal content dedups, nobody without the key can probe for it."""
        return blake3.blake3(data, key=self.mac).digest()

    @cached_property
    def _aead(self) -> AESGCM:
        return AESGCM(self.encrypt)

    def seal(self, plain: bytes | memoryview, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plain, aad)

    def seal_stream(self, head: bytes, body: memoryview, aad: bytes, step: int) -> Iterator[bytes]:
        """``seal(head + body, aad)`` in pieces of ``step`` bytes: a large blob is never copied whole."""
        nonce = os.urandom(NONCE)
        enc = Cipher(algorithms.AES(self.encrypt), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        yield nonce + enc.update(head)
        for i in range(0, len(body), step):
            yield enc.update(body[i:i + step])
        enc.finalize()
        yield enc.tag

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
        raw = memoryview(sealed)
        if len(raw) < OVERHEAD:
            raise SealError(f"{what} is truncated ({len(raw)} bytes)",
                            hint="run `flex backup verify --read-data` to see what it affects")
        try:
            return self._aead.decrypt(bytes(raw[:NONCE]), raw[NONCE:], aad)
        except InvalidTag:
            raise SealError(f"{what} is damaged: it does not authenticate",
                            hint="run `flex backup verify --read-data` to see what it affects") from None

    def to_json(self) -> dict[str, Any]:
        return {"encrypt": _b64(self.encrypt), "mac": _b64(self.mac), "chunker_seed": self.chunker_seed}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MasterKey:
        return cls(base64.b64decode(d["encrypt"]), base64.b64decode(d["mac"]), int(d["chunker_seed"]))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _kek(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password)


def wrap_key(master: MasterKey, password: bytes) -> bytes:
    """A ``keys/<id>`` file: the master key sealed under a password-derived key."""
    salt = os.urandom(32)
    kek = _kek(password, salt, **KDF)
    nonce = os.urandom(NONCE)
    data = nonce + AESGCM(kek).encrypt(nonce, json.dumps(master.to_json()).encode(), b"key")
    return json.dumps({"kdf": "scrypt", **KDF, "salt": _b64(salt), "data": _b64(data)}).encode()


def unwrap_key(raw: bytes, password: bytes) -> MasterKey:
    try:
        d = json.loads(raw)
        kek = _kek(password, base64.b64decode(d["salt"]), int(d["n"]), int(d["r"]), int(d["p"]))
        data = base64.b64decode(d["data"])
    except (ValueError, KeyError, TypeError) as err:
        raise FailedPrecondition(f"key file is not readable: {err}") from None
    try:
        plain = AESGCM(kek).decrypt(data[:NONCE], data[NONCE:], b"key")
    except InvalidTag:
        raise PermissionDenied("wrong password for this backup repository") from None
    return MasterKey.from_json(json.loads(plain))
