"""A store in S3-compatible object storage, through the MinIO SDK. Imports nothing from flex but flex.errors.

Why MinIO's SDK and not boto3: docs/backup.md (import cost and throughput, measured). The SDK is imported
only when an S3 store is opened. Objects over ``PART_SIZE`` go up as multipart uploads, one part at a
time, read from their spool (an unnamed file in TMPDIR): a pack is never whole in memory. Every call is
retried with exponential backoff on connection errors, timeouts and 5xx/429 answers. The secret key is
kept out of ``repr``, ``location`` and every error message.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from flex.backup.stores.base import Spool, temp_fd
from flex.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable

if TYPE_CHECKING:
    from minio import Minio

__all__ = ["S3Store"]

PART_SIZE = 8 << 20
ATTEMPTS = 6
T = TypeVar("T")


def _minio() -> type[Minio]:
    """minio's package imports its admin client, whose minio.crypto imports argon2, pycryptodome and
    cffi (3 MiB of every S3 run's peak memory, issue 17) for calls an S3 store never makes. A stand-in
    minio.crypto imports the real one only if one of its functions is called."""
    if "minio" not in sys.modules and "minio.crypto" not in sys.modules:
        def later(name: str) -> Callable[..., object]:
            def call(*args: object, **kwargs: object) -> object:
                sys.modules.pop("minio.crypto", None)
                return getattr(importlib.import_module("minio.crypto"), name)(*args, **kwargs)
            return call
        stand_in = types.ModuleType("minio.crypto")
        stand_in.encrypt, stand_in.decrypt = later("encrypt"), later("decrypt")  # type: ignore[attr-defined]
        sys.modules["minio.crypto"] = stand_in
        try:
            importlib.import_module("minio")
        except ImportError:  # another minio wants more of it: import it as it is
            for name in [m for m in sys.modules if m == "minio" or m.startswith("minio.")]:
                del sys.modules[name]
    from minio import Minio

    return Minio


class S3Store:
    """``s3:http://host:port/bucket[/prefix]``; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""

    def __init__(self, url: str, *, access_key: str | None = None, secret_key: str | None = None,
                 region: str = "us-east-1", backoff: float = 0.2):
        import urllib3

        client_class = _minio()
        parts = urlsplit(url.removeprefix("s3:"))
        bucket, _, prefix = parts.path.strip("/").partition("/")
        if parts.scheme not in ("http", "https") or not parts.netloc or not bucket:
            raise InvalidArgument(f"bad S3 repository {url!r}", hint="use s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]")
        access_key = access_key or os.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access_key or not secret_key:
            raise Unauthenticated(f"no credentials for {url}", hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.location = f"s3:{parts.scheme}://{parts.netloc}/{bucket}/{self.prefix}".rstrip("/")
        self._backoff = backoff
        # Our own loop retries (it also covers errors in the middle of a body); urllib3 only times out.
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10, read=120), retries=False, maxsize=8)
        self._client: Minio = client_class(parts.netloc, access_key=access_key, secret_key=secret_key,
                                    secure=parts.scheme == "https", region=region, http_client=http)
        self._ensure_bucket()

    def __repr__(self) -> str:
        return f"S3Store({self.location!r})"

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        from minio.error import S3Error

        for attempt in range(ATTEMPTS):
            try:
                return fn()
            except S3Error as err:
                if err.code in ("NoSuchKey", "NoSuchBucket"):
                    raise NotFound(f"{self.location}: {what}: {err.code}") from None
                if err.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                    raise PermissionDenied(f"{self.location}: {what}: {err.code}",
                                           hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
                if err.response is not None and err.response.status < 500 and err.response.status != 429:
                    raise Unavailable(f"{self.location}: {what}: {err.code}") from None
                last = f"{err.code}"
            except Exception as err:
                if type(err).__module__.split(".")[0] not in ("urllib3", "http", "socket", "ssl", "minio") \
                        and not isinstance(err, OSError):
                    raise
                last = type(err).__name__
            time.sleep(self._backoff * (2 ** attempt) * (0.5 + random.random()))
        raise Unavailable(f"{self.location}: {what} failed {ATTEMPTS} times ({last})",
                          hint="check that the object storage is reachable")

    def _ensure_bucket(self) -> None:
        if not self._retry("bucket", lambda: self._client.bucket_exists(self.bucket)):
            self._retry("make bucket", lambda: self._client.make_bucket(self.bucket))

    def put(self, name: str, data: bytes) -> None:
        if self.exists(name):
            return  # names derive from content: never rewrite an object
        key = self.prefix + name
        self._retry(f"put {name}", lambda: self._client.put_object(
            self.bucket, key, BytesIO(data), len(data),
            part_size=PART_SIZE if len(data) > PART_SIZE else 0))

    def spool(self) -> Spool:
        return Spool(*temp_fd(tempfile.gettempdir()))

    def put_spool(self, name: str, spool: Spool) -> None:
        try:
            if self.exists(name):
                return
            key, size = self.prefix + name, spool.size

            def upload() -> object:
                os.lseek(spool.fd, 0, os.SEEK_SET)  # a retry starts again
                f = open(spool.fd, "rb", buffering=0, closefd=False)  # noqa: SIM115 - the spool owns the fd
                return self._client.put_object(self.bucket, key, f, size, num_parallel_uploads=1,
                                               part_size=PART_SIZE if size > PART_SIZE else 0)
            self._retry(f"put {name}", upload)
        finally:
            spool.close()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        def fetch() -> bytes:
            resp = self._client.get_object(self.bucket, self.prefix + name, offset=offset, length=length or 0)
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()
        if length == 0:
            return b""
        return self._retry(f"get {name}", fetch)

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
        except NotFound:
            return False
        return True

    def size(self, name: str) -> int:
        st = self._retry(f"stat {name}", lambda: self._client.stat_object(self.bucket, self.prefix + name))
        return int(st.size or 0)

    def list(self, prefix: str) -> Iterator[str]:
        objs = self._retry(f"list {prefix}", lambda: list(
            self._client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True)))
        for o in objs:
            if o.object_name is not None:
                yield o.object_name[len(self.prefix):]

    def delete(self, name: str) -> None:
        self._retry(f"delete {name}", lambda: self._client.remove_object(self.bucket, self.prefix + name))
