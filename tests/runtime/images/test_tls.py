"""Registries over TLS with a CA of the test's own: trusted through certs.d (Docker's and podman's
layout, the root moved by FLEX_REGISTRY_CERTS_D so nothing is written to /etc), with a client
certificate when the registry asks for one, and through the system's CA bundle (bind-mounted over
/etc/ssl/certs/ca-certificates.crt in a private mount namespace, again leaving /etc alone)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import run_flex

from .conftest import RegistryServer, skopeo_push, start_registry, stop, umoci_image_from_dirs

pytestmark = [pytest.mark.registry, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unpack owners)")]


class Authority:
    """A test CA that issues server and client certificates (written as PEM files under ``out``)."""

    def __init__(self, out: Path):
        self.out = out
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flex test CA")])
        usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)
        self.cert = (_builder(self.name, self.name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(usage, critical=True).sign(self.key, hashes.SHA256()))
        self.ca_pem = out / "ca.pem"
        self.ca_pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, ips: Sequence[str] = (), client: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        purpose = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = _builder(subject, self.name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([purpose]), critical=False)
        if ips:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.out / f"{name}.pem", self.out / f"{name}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _outward_ip() -> str | None:
    """This machine's first address that is not loopback (a registry there gets TLS by default)."""
    if shutil.which("ip") is None:
        return None
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                         check=False).stdout.split()
    return out[out.index("inet") + 1].split("/")[0] if "inet" in out else None


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


def _tls_registry(tmp: Path, ca: Authority, addr: str, *, client_ca: bool = False) -> RegistryServer:
    cert, key = ca.issue(f"registry-{addr}", ips=[addr])
    tls = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    if client_ca:
        tls += f"    clientcas:\n      - {ca.ca_pem}\n"
    reg = start_registry(tmp, addr=addr, tls_yaml=tls)
    state = tmp / "state"
    (state / "etc").mkdir(parents=True)
    (state / "etc" / "hello").write_text("hello over TLS\n")
    layout = umoci_image_from_dirs(tmp / "img", [state])
    extra = [f"--dest-cert-dir={tmp / 'skopeo-certs'}"] if client_ca else []
    if client_ca:
        (tmp / "skopeo-certs").mkdir()
        c, k = ca.issue("skopeo", client=True)
        shutil.copy(c, tmp / "skopeo-certs" / "skopeo.cert")
        shutil.copy(k, tmp / "skopeo-certs" / "skopeo.key")
    skopeo_push(layout, "test", reg, "tls/hello:1", *extra)
    return reg


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, ca: Authority) -> Iterator[RegistryServer]:
    reg = _tls_registry(tmp_path_factory.mktemp("tls"), ca, "127.0.0.1")
    yield reg
    stop(reg.proc)


@pytest.fixture
def certs_d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two certs.d roots, as podman's /etc/containers/certs.d and Docker's /etc/docker/certs.d."""
    roots = tmp_path / "containers-certs.d", tmp_path / "docker-certs.d"
    for root in roots:
        root.mkdir()
    monkeypatch.setenv("FLEX_REGISTRY_CERTS_D", ":".join(str(r) for r in roots))
    return roots


def test_ca_from_certs_d(flex_home: Path, tls_registry: RegistryServer, ca: Authority,
                         certs_d: tuple[Path, Path]) -> None:
    ref = f"{tls_registry.host}/tls/hello:1"
    host_dir = certs_d[1] / tls_registry.host
    host_dir.mkdir()
    # a certs.d directory makes even a loopback registry TLS; without the CA it is not trusted
    res = run_flex("image", "pull", ref)
    assert res.code == 1 and "TLS certificate not trusted" in res.stderr, res.stderr
    assert f"/etc/docker/certs.d/{tls_registry.host}/ca.crt" in res.stderr and "Traceback" not in res.stderr
    shutil.copy(ca.ca_pem, host_dir / "ca.crt")
    res = run_flex("image", "pull", ref)
    assert res.code == 0, res.stderr
    lower = run_flex("image", "inspect", ref, "--json").stdout
    assert '"lowerdirs"' in lower


def test_first_certs_d_with_the_host_wins(flex_home: Path, tls_registry: RegistryServer, ca: Authority,
                                          certs_d: tuple[Path, Path]) -> None:
    """podman's order: /etc/containers/certs.d/HOST, when it exists, is the one read."""
    (certs_d[0] / tls_registry.host).mkdir()
    (certs_d[1] / tls_registry.host).mkdir()
    shutil.copy(ca.ca_pem, certs_d[1] / tls_registry.host / "ca.crt")
    assert run_flex("image", "pull", f"{tls_registry.host}/tls/hello:1").code == 1
    shutil.copy(ca.ca_pem, certs_d[0] / tls_registry.host / "ca.crt")
    res = run_flex("image", "pull", f"{tls_registry.host}/tls/hello:1")
    assert res.code == 0, res.stderr


def test_client_certificate_from_certs_d(flex_home: Path, ca: Authority, certs_d: tuple[Path, Path],
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    reg = _tls_registry(tmp_path_factory.mktemp("mtls"), ca, "127.0.0.1", client_ca=True)
    try:
        ref = f"{reg.host}/tls/hello:1"
        host_dir = certs_d[1] / reg.host
        host_dir.mkdir()
        shutil.copy(ca.ca_pem, host_dir / "ca.crt")
        assert run_flex("image", "pull", ref).code != 0  # the registry wants a client certificate
        cert, key = ca.issue("flex-client", client=True)
        shutil.copy(cert, host_dir / "client.cert")
        res = run_flex("image", "pull", ref)
        assert res.code == 7 and f"missing key {host_dir / 'client.key'}" in res.stderr, res.stderr
        shutil.copy(key, host_dir / "client.key")
        res = run_flex("image", "pull", ref)
        assert res.code == 0, res.stderr
    finally:
        stop(reg.proc)


def test_ca_from_the_system_bundle(flex_home: Path, ca: Authority, certs_d: tuple[Path, Path],
                                   tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A CA added to the system's bundle (update-ca-certificates) is trusted, not only certifi's list."""
    ip = _outward_ip()
    if ip is None:
        pytest.skip("this machine has no address other than loopback")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_bytes((system.read_bytes() if system.exists() else b"") + ca.ca_pem.read_bytes())
    reg = _tls_registry(tmp_path_factory.mktemp("system"), ca, ip)
    try:
        pull = [sys.executable, "-m", "flex", "image", "pull", f"{reg.host}/tls/hello:1"]
        res = run_flex("image", "pull", f"{reg.host}/tls/hello:1")
        assert res.code == 1 and "TLS certificate not trusted" in res.stderr, res.stderr
        res = _in_mount_ns(f"mount --bind {bundle} {system} && exec \"$@\"", pull)
        assert res.returncode == 0, res.stderr
    finally:
        stop(reg.proc)


def _in_mount_ns(script: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "FLEX_DEBUG")}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
