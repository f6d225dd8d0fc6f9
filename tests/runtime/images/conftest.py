"""Fixtures for image tests: a real docker-registry on 127.0.0.1 (anonymous, htpasswd, token auth), a
FLEX_HOME per test, and images built independently of flex with umoci and pushed with skopeo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import missing

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port(addr: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


@dataclass
class RegistryServer:
    host: str
    proc: subprocess.Popen[bytes]
    root: Path
    username: str | None = None
    password: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def creds_args(self) -> list[str]:
        if self.username:
            return [f"--dest-creds={self.username}:{self.password}"]
        return []


def start_registry(tmp: Path, auth_yaml: str = "", *, addr: str = "127.0.0.1", tls_yaml: str = "") -> RegistryServer:
    """``tls_yaml``: lines under ``http:`` (indented two spaces), e.g. a ``tls:`` block."""
    if not Path(REGISTRY_BIN).exists():
        missing("docker-registry is not installed (run installer/install.sh --dev)")
    port = free_port(addr)
    (tmp / "storage").mkdir(parents=True, exist_ok=True)
    config = tmp / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {tmp / 'storage'}
  delete:
    enabled: true
http:
  addr: {addr}:{port}
  secret: flex-test-secret
{tls_yaml}{auth_yaml}""")
    log = open(tmp / "registry.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    host = f"{addr}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(tmp / 'registry.log').read_text()[-2000:]}")
        try:
            httpx.get(f"http://{host}/v2/", timeout=1)  # a TLS registry answers 400: up all the same
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("docker-registry did not start")
    return RegistryServer(host, proc, tmp)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    stop(reg.proc)


@pytest.fixture
def flex_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "flexhome"
    monkeypatch.setenv("FLEX_HOME", str(home))
    monkeypatch.setenv("FLEX_AUTH_FILE", str(tmp_path / "auth.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return home


def run(*cmd: str, cwd: Path | None = None, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, input=input, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}")
    return proc


def umoci_image_from_dirs(work: Path, layers: list[Path | None], *, tag: str = "test",
                          history: str = "test") -> Path:
    """An OCI layout at work/layout:tag whose layers are made by umoci from successive rootfs states:
    ``layers[i]`` is a function-less snapshot: the directory whose contents the rootfs must have after
    layer i (umoci computes the diff, whiteouts included)."""
    for tool in ("umoci", "skopeo"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (run installer/install.sh --dev)")
    layout = work / "layout"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:{tag}")
    for i, state in enumerate(layers):
        bundle = work / f"bundle{i}"
        run("umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle))
        rootfs = bundle / "rootfs"
        assert state is not None
        _sync_with_tar(state, rootfs)
        run("umoci", "repack", "--image", f"{layout}:{tag}", "--history.created_by", f"{history} {i}", str(bundle))
        shutil.rmtree(bundle)
    return layout


def _sync_with_tar(state: Path, rootfs: Path) -> None:
    for child in rootfs.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    tar = subprocess.Popen(["tar", "--xattrs", "--xattrs-include=*", "-C", str(state), "-cf", "-", "."],
                           stdout=subprocess.PIPE)
    run("tar", "--xattrs", "--xattrs-include=*", "--same-owner", "-p", "-C", str(rootfs), "-xf", "-",
        input=tar.communicate()[0])


def skopeo_push(layout: Path, tag: str, reg: RegistryServer, repo: str, *extra: str) -> None:
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", *reg.creds_args(), *extra,
        f"oci:{layout}:{tag}", f"docker://{reg.host}/{repo}")


def env_without_proxy() -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del env[key]
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env
