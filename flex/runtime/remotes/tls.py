"""TLS for registries: the system's CA bundle, and per-host CAs and client certificates from certs.d.

Docker and podman read ``<certs.d>/<host[:port]>/``: ``*.crt`` are CAs trusted for that host in addition
to the system's, and ``NAME.cert`` with ``NAME.key`` is a client certificate. The roots searched are
podman's ($XDG_CONFIG_HOME/containers/certs.d for a user), then /etc/containers/certs.d and
/etc/docker/certs.d; FLEX_REGISTRY_CERTS_D (colon-separated) replaces them. The first root with a
directory for the host is the one used, as in containers/image. The system bundle is OpenSSL's
default (Debian: /etc/ssl/certs, where update-ca-certificates puts a corporate CA), not certifi's copy.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from flex.errors import InvalidConfiguration

__all__ = ["certs_d_roots", "host_cert_dir", "ssl_context", "verify_failure"]


def certs_d_roots() -> list[Path]:
    env = os.environ.get("FLEX_REGISTRY_CERTS_D")
    if env is not None:
        return [Path(p) for p in env.split(":") if p]
    roots = []
    if os.geteuid() != 0:
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        roots.append(Path(xdg) / "containers" / "certs.d")
    return [*roots, Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")]


def host_cert_dir(host: str) -> Path | None:
    if "/" in host or host in ("", ".", ".."):
        return None
    for root in certs_d_roots():
        if (root / host).is_dir():
            return root / host
    return None


def ssl_context(host: str) -> ssl.SSLContext:
    """The system's CAs plus the host's certs.d; raises InvalidConfiguration naming a bad file."""
    ctx = ssl.create_default_context()
    where = host_cert_dir(host)
    if where is None:
        return ctx
    for path in sorted(where.iterdir()):
        try:
            if path.suffix == ".crt":
                ctx.load_verify_locations(cafile=str(path))
            elif path.suffix == ".cert":
                key = path.with_suffix(".key")
                if not key.is_file():  # Docker's rule, and its wording
                    raise InvalidConfiguration(f"missing key {key} for client certificate {path}",
                                               hint="CA certificates must use the extension .crt")
                ctx.load_cert_chain(str(path), str(key))
            elif path.suffix == ".key" and not path.with_suffix(".cert").is_file():
                raise InvalidConfiguration(f"missing client certificate {path.with_suffix('.cert')} for key {path}")
        except (ssl.SSLError, OSError) as err:
            raise InvalidConfiguration(f"{path}: not a usable certificate or key ({err})",
                                       details={"file": str(path)}) from err
    return ctx


def verify_failure(err: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error somewhere under an httpx error, if that is what it was."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
