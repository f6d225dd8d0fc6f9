"""Pull and push against docker-registry behind htpasswd basic auth and behind Bearer token auth."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flex.errors import Unauthenticated, Unavailable
from flex.runtime.base.home import Home
from flex.runtime.images.store import ImageStore
from flex.runtime.remotes.auth import Credentials, parse_challenge
from flex.runtime.remotes.registry import Registry, RegistryClient
from flex.runtime.transfer.pull import pull
from tests.conftest import run_flex

from .conftest import RegistryServer, skopeo_push, start_registry, stop, umoci_image_from_dirs
from .tokenserver import TokenServer

pytestmark = [pytest.mark.registry, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unpack owners)")]

USER, PASSWORD = "alice", "s3cret-pw"


def _small_image(work: Path) -> Path:
    state = work / "state"
    (state / "etc").mkdir(parents=True)
    (state / "etc" / "hello").write_text("hello from an authenticated registry\n")
    return umoci_image_from_dirs(work, [state])


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    tmp = tmp_path_factory.mktemp("basic")
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True)
    (tmp / "htpasswd").write_text(htpasswd.stdout)
    reg = start_registry(tmp, f"auth:\n  htpasswd:\n    realm: flex-test\n    path: {tmp / 'htpasswd'}\n")
    reg.username, reg.password = USER, PASSWORD
    skopeo_push(_small_image(tmp / "img"), "test", reg, "private/hello:1")
    yield reg
    stop(reg.proc)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, TokenServer]]:
    tmp = tmp_path_factory.mktemp("token")
    tokens = TokenServer(tmp, USER, PASSWORD, service="flex-test-registry", issuer="flex-test-issuer")
    reg = start_registry(tmp, f"""auth:
  token:
    realm: {tokens.realm}
    service: flex-test-registry
    issuer: flex-test-issuer
    rootcertbundle: {tokens.cert_path}
""")
    reg.username, reg.password = USER, PASSWORD
    skopeo_push(_small_image(tmp / "img"), "test", reg, "private/hello:1")
    yield reg, tokens
    stop(reg.proc)
    tokens.close()


def test_basic_auth_needs_credentials(flex_home: Path, basic_registry: RegistryServer) -> None:
    res = run_flex("image", "pull", f"{basic_registry.host}/private/hello:1")
    assert res.code == 5, res.stderr
    assert "authentication required" in res.stderr and "flex image login" in res.stderr


def test_basic_auth_with_flex_login(flex_home: Path, basic_registry: RegistryServer) -> None:
    bad = run_flex("image", "login", basic_registry.host, "-u", USER, "--password-stdin", input="wrong\n")
    assert bad.code == 5, bad.stderr
    ok = run_flex("image", "login", basic_registry.host, "-u", USER, "--password-stdin", input=PASSWORD + "\n")
    assert ok.code == 0, ok.stderr
    auth_file = Path(os.environ["FLEX_AUTH_FILE"])
    assert oct(auth_file.stat().st_mode & 0o777) == "0o600"
    res = run_flex("image", "pull", f"{basic_registry.host}/private/hello:1")
    assert res.code == 0, res.stderr
    # push back under another tag: blobs already in the repository are not uploaded again
    res = run_flex("image", "push", f"{basic_registry.host}/private/hello:1", f"{basic_registry.host}/private/hello:2")
    assert res.code == 0, res.stderr
    assert "already exists" in res.stderr
    # to another repository of the same registry: blobs are mounted across, not uploaded
    res = run_flex("image", "push", f"{basic_registry.host}/private/hello:1", f"{basic_registry.host}/private/copy:1")
    assert res.code == 0, res.stderr
    assert "mounted from private/hello" in res.stderr
    assert run_flex("image", "pull", f"{basic_registry.host}/private/copy:1").code == 0


def test_basic_auth_from_docker_config(flex_home: Path, basic_registry: RegistryServer) -> None:
    docker = Path(os.environ["DOCKER_CONFIG"])
    docker.mkdir(parents=True)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {basic_registry.host: {"auth": token}}}))
    store = ImageStore(Home.open())
    img = pull(store, f"{basic_registry.host}/private/hello:1")
    (layer,) = store.snapshots.lowers(img.top_snapshot or "")
    assert (layer / "etc/hello").read_text() == "hello from an authenticated registry\n"


def test_bearer_token_flow(flex_home: Path, token_registry: tuple[RegistryServer, TokenServer]) -> None:
    reg, tokens = token_registry
    ref = f"{reg.host}/private/hello:1"
    res = run_flex("image", "pull", ref)
    assert res.code == 5 and "token server refused" in res.stderr, res.stderr
    assert run_flex("image", "login", reg.host, "-u", USER, "-p", PASSWORD).code == 0
    tokens.requests.clear()
    res = run_flex("image", "pull", ref)
    assert res.code == 0, res.stderr
    scopes = {s for q in tokens.requests for s in q.get("scope", [])}
    assert "repository:private/hello:pull" in scopes
    assert all(q.get("service") == ["flex-test-registry"] for q in tokens.requests)
    res = run_flex("image", "push", ref, f"{reg.host}/private/pushed:1")
    assert res.code == 0, res.stderr
    assert "repository:private/pushed:pull,push" in {s for q in tokens.requests for s in q.get("scope", [])}
    assert run_flex("image", "pull", f"{reg.host}/private/pushed:1").code == 0


def test_challenge_parsing() -> None:
    c = parse_challenge('Bearer realm="https://auth.example/token",service="reg.example",'
                        'scope="repository:a/b:pull,push"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "reg.example",
                        "scope": "repository:a/b:pull,push"}
    basic = parse_challenge('Basic realm="x"')
    assert basic is not None and basic.scheme == "basic"


def test_retries_on_429_and_503_then_succeeds() -> None:
    """429/5xx cannot be produced by docker-registry on demand: a MockTransport stands in."""
    calls: list[int] = []
    statuses = [429, 503, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        code = statuses[min(len(calls) - 1, 2)]
        if code != 200:
            return httpx.Response(code, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"schemaVersion": 2},
                              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})

    with Registry("127.0.0.1:1", transport=httpx.MockTransport(handler), backoff=0.0) as reg:
        data, media_type, _ = RegistryClient(reg, "a/b").get_manifest("latest")
    assert len(calls) == 3 and json.loads(data) == {"schemaVersion": 2}
    assert media_type == "application/vnd.oci.image.manifest.v1+json"

    statuses[:] = [503, 503, 503]
    calls.clear()
    with Registry("127.0.0.1:1", transport=httpx.MockTransport(handler), backoff=0.0, retries=2) as reg, \
            pytest.raises(Unavailable, match="HTTP 503"):
        RegistryClient(reg, "a/b").get_manifest("latest")
    assert len(calls) == 3


def test_wrong_credentials_for_token(flex_home: Path, token_registry: tuple[RegistryServer, TokenServer]) -> None:
    reg, _ = token_registry
    with Registry(reg.host, credentials=Credentials(USER, "nope")) as r, pytest.raises(Unauthenticated):
        RegistryClient(r, "private/hello").get_manifest("1")
