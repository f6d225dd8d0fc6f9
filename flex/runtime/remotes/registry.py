"""OCI distribution client over httpx: manifests and blobs, pull and push, with auth and retries.

Auth follows the challenge flow Docker Hub and GHCR use: a request answered 401 carries
``WWW-Authenticate``, which the host's Authorizer (authorizer.py) answers — Basic, or a bearer token per
scope, renewed before it expires. 429 and 5xx (and connection errors) are retried with exponential
backoff, honouring Retry-After. TLS trusts the system's CAs and the host's certs.d (tls.py). Plain HTTP
only for loopback registries and FLEX_INSECURE_REGISTRIES, and not for a host with a certs.d
directory. The transport is injectable (tests, proxies).
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

import httpx

from flex.errors import (
    FailedPrecondition,
    FlexError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from flex.runtime.content.spool import Spool
from flex.runtime.content.store import BlobWriter, ContentStore, DigestMismatch, sha256_digest
from flex.runtime.images.mediatypes import MANIFEST_ACCEPT, MAX_MANIFEST_SIZE
from flex.runtime.images.reference import is_insecure_registry
from flex.runtime.remotes.auth import Credentials, lookup_credentials
from flex.runtime.remotes.authorizer import Authorizer
from flex.runtime.remotes.tls import host_cert_dir, ssl_context, verify_failure

__all__ = ["Registry", "RegistryClient"]

_CHUNK = 1 << 20
_UPLOAD_CHUNK = 16 << 20


class Registry:
    """One registry host: connection, scheme and auth state (thread-safe; used by concurrent fetches)."""

    def __init__(self, host: str, *, transport: httpx.BaseTransport | None = None,
                 credentials: Credentials | None = None, retries: int = 4, backoff: float = 0.5,
                 timeout: float = 60.0):
        self.host = host
        api_host = "registry-1.docker.io" if host == "docker.io" else host
        # a host given CAs in certs.d speaks TLS, loopback or not
        self.scheme = "http" if is_insecure_registry(host) and host_cert_dir(host) is None else "https"
        self.base = f"{self.scheme}://{api_host}"
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.Client(transport=transport, timeout=httpx.Timeout(timeout, connect=15.0),
                                     verify=ssl_context(host) if transport is None else True,
                                     follow_redirects=True, headers={"User-Agent": "flex/0.1"})
        given = credentials
        self.auth = Authorizer(host, self._client,
                               (lambda: given) if given is not None else (lambda: lookup_credentials(host)))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------------
    def request(self, method: str, url: str, *, scope: str, headers: dict[str, str] | None = None,
                content: bytes | Iterator[bytes] | None = None, params: dict[str, str] | None = None,
                stream: bool = False, ok: tuple[int, ...] = (200,), what: str = "") -> httpx.Response:
        """Send with auth and retries; returns a response whose status is in ``ok`` (stream: caller closes)."""
        if not url.startswith("http"):
            url = self.base + url
        attempt = 0
        reauthed = False
        while True:
            hdrs = {**(headers or {}), **self.auth.header(scope)}
            try:
                req = self._client.build_request(method, url, headers=hdrs, content=content, params=params)
                resp = self._client.send(req, stream=stream)
            except (httpx.TransportError, httpx.TimeoutException) as err:
                untrusted = verify_failure(err)
                if untrusted is not None:
                    raise FailedPrecondition(
                        f"{self.host}: TLS certificate not trusted: {untrusted.verify_message}",
                        hint=f"put the registry's CA in /etc/docker/certs.d/{self.host}/ca.crt (or "
                             "/etc/containers/certs.d/…, or the system's bundle)") from err
                # a refused connection is rarely transient (wrong port, registry down): retry it once
                limit = min(self.retries, 1) if isinstance(err, httpx.ConnectError) else self.retries
                if attempt < limit and not isinstance(content, Iterator):
                    time.sleep(self.backoff * 2 ** attempt)
                    attempt += 1
                    continue
                raise Unavailable(f"{self.host}: {what or method + ' ' + url}: {type(err).__name__}: {err}",
                                  hint="is the registry running and reachable?") from err
            if resp.status_code in ok:
                return resp
            if stream:
                resp.read()
                resp.close()
            if resp.status_code == 401 and not reauthed and self.auth.answer(resp, scope):
                reauthed = True
                continue
            if (resp.status_code == 429 or resp.status_code >= 500) and attempt < self.retries \
                    and not isinstance(content, Iterator):
                time.sleep(_retry_after(resp, self.backoff * 2 ** attempt))
                attempt += 1
                continue
            raise self._error(resp, what or f"{method} {url}")

    def _error(self, resp: httpx.Response, what: str) -> FlexError:
        code = resp.status_code
        detail = _error_detail(resp)
        if code == 401:
            return Unauthenticated(f"{self.host}: {what}: authentication required{detail}",
                                   hint=f"run `flex image login {self.host}` or check ~/.docker/config.json")
        if code == 403:
            return PermissionDenied(f"{self.host}: {what}: access denied{detail}")
        if code == 404:
            return NotFound(f"{self.host}: {what}: not found{detail}")
        if code == 429 or code >= 500:
            return Unavailable(f"{self.host}: {what}: HTTP {code}{detail}", hint="try again later")
        return FlexError(f"{self.host}: {what}: HTTP {code}{detail}")


class RegistryClient:
    """The operations on one repository that pull and push need."""

    def __init__(self, registry: Registry, repository: str):
        self.reg = registry
        self.repo = repository

    def _scope(self, push: bool = False) -> str:
        return f"repository:{self.repo}:{'pull,push' if push else 'pull'}"

    def get_manifest(self, obj: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index by tag or digest → (bytes, media type, digest). Verified against a
        requested digest; refused over MAX_MANIFEST_SIZE."""
        what = f"manifest {self.repo}:{obj}" if ":" not in obj else f"manifest {self.repo}@{obj}"
        resp = self.reg.request("GET", f"/v2/{self.repo}/manifests/{obj}", scope=self._scope(),
                                headers={"Accept": MANIFEST_ACCEPT}, stream=True, what=what)
        try:
            data = _read_limited(resp, MAX_MANIFEST_SIZE, what)
        finally:
            resp.close()
        digest = sha256_digest(data)
        if obj.startswith("sha256:") and digest != obj:
            raise DigestMismatch(f"{what}: digest mismatch: got {digest}")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        return data, media_type, digest

    def fetch_blob(self, store: ContentStore, digest: str, size: int,
                   progress: Callable[[int], None] | None = None, max_size: int | None = None,
                   spool: Spool | None = None) -> str:
        """Stream a blob into the content store, verifying size and digest as it arrives; a ``spool``
        lets another thread read it meanwhile (and learns of the outcome)."""
        try:
            out = self._fetch_blob(store, digest, size, progress, max_size, spool)
        except BaseException as err:
            if spool is not None:
                spool.finished(err)
            raise
        if spool is not None:
            spool.finished(None)
        return out

    def _fetch_blob(self, store: ContentStore, digest: str, size: int, progress: Callable[[int], None] | None,
                    max_size: int | None, spool: Spool | None) -> str:
        if store.exists(digest):
            if progress:
                progress(size)
            return digest
        if max_size is not None and size > max_size:
            raise InvalidArgument(f"blob {digest} of {self.repo} is {size} bytes; the limit is {max_size}")
        resumed = False
        try:
            with store.resumable_writer(digest, size) as w:
                resumed = w.written > 0
                # bytes an earlier attempt left are unverified until the end: a reader (spool) of a resumed
                # download waits for the committed blob instead
                return self._download(w, digest, size, progress, None if resumed else spool)
        except DigestMismatch:
            if not resumed:
                raise
        # what an earlier attempt left did not check out (a torn tail after a crash): once more, from 0
        with store.resumable_writer(digest, size) as w:
            return self._download(w, digest, size, progress, spool)

    def _download(self, w: BlobWriter, digest: str, size: int, progress: Callable[[int], None] | None,
                  spool: Spool | None) -> str:
        """Fetch what ``w`` lacks, continuing with a Range request after what is there, and again after
        a connection that breaks off mid-blob (up to the registry's retries)."""
        what = f"blob {self.repo}@{digest}"
        attempt = 0
        opened = False
        while w.written < size:
            offset = w.written
            resp = self.reg.request("GET", f"/v2/{self.repo}/blobs/{digest}", scope=self._scope(), stream=True,
                                    headers={"Range": f"bytes={offset}-"} if offset else None,
                                    ok=(200, 206, 416), what=what)
            try:
                if not _range_starts_at(resp, offset):
                    if opened:  # a reader has seen those bytes: they must not be rewritten under it
                        raise Unavailable(f"{self.reg.host}: {what}: the registry stopped honouring Range "
                                          f"requests (HTTP {resp.status_code})", hint="pull again")
                    w.restart()
                    if resp.status_code != 200:  # 416 or a range we did not ask for: ask for the whole blob
                        if attempt >= self.reg.retries:
                            raise Unavailable(f"{self.reg.host}: {what}: HTTP {resp.status_code} to a request "
                                              "for the whole blob")
                        attempt += 1
                        continue
                if not opened:
                    opened = True
                    if spool is not None:
                        spool.opened(w.path)
                        spool.wrote(w.written)
                    if progress and w.written:
                        progress(w.written)
                # as the bytes arrive (no chunker holding a tail back), so a break loses none of them
                for chunk in resp.iter_bytes():
                    w.write(chunk)
                    if spool is not None:
                        w.flush()
                        spool.wrote(len(chunk))
                    if progress:
                        progress(len(chunk))
                if w.written < size:
                    raise httpx.RemoteProtocolError(f"body ended after {w.written} of {size} bytes")
            except httpx.HTTPError as err:
                if attempt >= self.reg.retries:
                    raise Unavailable(f"{self.reg.host}: download of {digest} broke off at byte {w.written}: "
                                      f"{err}", hint="pull again: the download continues where it stopped") from err
                time.sleep(self.reg.backoff * 2 ** attempt)
                attempt += 1
            finally:
                resp.close()
        if not opened and spool is not None:  # everything was already there
            spool.opened(w.path)
            spool.wrote(w.written)
        return w.commit()

    def blob_exists(self, digest: str) -> bool:
        try:
            self.reg.request("HEAD", f"/v2/{self.repo}/blobs/{digest}", scope=self._scope(push=True),
                             what=f"blob {digest}")
        except NotFound:
            return False
        return True

    def push_blob(self, digest: str, size: int, opener: Callable[[], BinaryIO],
                  progress: Callable[[int], None] | None = None, chunk_size: int = _UPLOAD_CHUNK,
                  mount_from: str | None = None) -> str:
        """Upload a blob unless the registry already has it; returns "exists", "mounted" (cross-repository
        mount from ``mount_from`` on the same registry) or "pushed". Chunked: POST, PATCH per chunk with
        Content-Range, final PUT with the digest."""
        if self.blob_exists(digest):
            if progress:
                progress(size)
            return "exists"
        scope = self._scope(push=True)
        params = None
        start_scope = scope
        if mount_from and mount_from != self.repo:
            params = {"mount": digest, "from": mount_from}
            start_scope = f"{scope} repository:{mount_from}:pull"  # a mount also reads the source
        resp = self.reg.request("POST", f"/v2/{self.repo}/blobs/uploads/", scope=start_scope, ok=(201, 202),
                                params=params, what=f"start upload of {digest}")
        if resp.status_code == 201:  # mounted: the registry linked the blob from the other repository
            if progress:
                progress(size)
            return "mounted"
        location = _location(self.reg, resp)
        offset = 0
        with opener() as f:
            while True:
                chunk = f.read(chunk_size)
                if not chunk:
                    break
                end = offset + len(chunk) - 1
                resp = self.reg.request("PATCH", location, scope=scope, content=chunk, ok=(202,),
                                        headers={"Content-Type": "application/octet-stream",
                                                 "Content-Range": f"{offset}-{end}",
                                                 "Content-Length": str(len(chunk))},
                                        what=f"upload of {digest}")
                location = _location(self.reg, resp)
                offset = end + 1
                if progress:
                    progress(len(chunk))
        sep = "&" if "?" in location else "?"
        self.reg.request("PUT", f"{location}{sep}digest={digest}", scope=scope, ok=(201, 204),
                         headers={"Content-Length": "0"}, content=b"", what=f"finish upload of {digest}")
        return "pushed"

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> str:
        resp = self.reg.request("PUT", f"/v2/{self.repo}/manifests/{tag}", scope=self._scope(push=True),
                                content=data, headers={"Content-Type": media_type}, ok=(201, 200),
                                what=f"manifest {self.repo}:{tag}")
        digest = sha256_digest(data)
        got = resp.headers.get("docker-content-digest")
        if got and got != digest:
            raise DigestMismatch(f"registry stored manifest {self.repo}:{tag} as {got}, expected {digest}")
        return digest


def _retry_after(resp: httpx.Response, default: float) -> float:
    value = resp.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), 30.0)
    except ValueError:
        return default


def _error_detail(resp: httpx.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        msgs = [str(e.get("message") or e.get("code")) for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return ""
    return f" ({'; '.join(msgs)})" if msgs else ""


def _read_limited(resp: httpx.Response, limit: int, what: str) -> bytes:
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InvalidArgument(f"{what} is {declared} bytes; flex refuses manifests over {limit} bytes")
    buf = bytearray()
    for chunk in resp.iter_bytes(_CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise InvalidArgument(f"{what} is larger than {limit} bytes; refused")
    return bytes(buf)


def _location(reg: Registry, resp: httpx.Response) -> str:
    loc = str(resp.headers.get("location") or "")
    if not loc:
        raise FlexError(f"{reg.host}: upload answer without a Location header")
    if loc.startswith("/"):
        return reg.base + loc
    return loc


def _range_starts_at(resp: httpx.Response, offset: int) -> bool:
    """A 200 for offset 0, or a 206 whose ``Content-Range: bytes START-END/TOTAL`` starts at ``offset``."""
    if resp.status_code == 200:
        return offset == 0
    if resp.status_code != 206:
        return False
    unit, _, rng = resp.headers.get("content-range", "").partition(" ")
    start = rng.split("-", 1)[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset
