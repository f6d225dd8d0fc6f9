"""Pull and push against docker-registry behind htpasswd basic auth and behind Bearer token auth."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flex.errors import Unauthenticated, Unavailable
from flex.runtime.base.home import Home
from flex.runtime.base.progress import NullProgress
from flex.runtime.images.store import ImageStore
from flex.runtime.remotes.auth import Credentials, parse_challenge, save_login
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


class _SlowPull(NullProgress):
    """A pull that outlives its token: it waits after resolving the manifest, before fetching any layer."""

    def __init__(self, wait: float):
        self.wait = wait

    def step(self, message: str) -> None:
        if "layer(s)" in message:
            time.sleep(self.wait)


@pytest.fixture
def short_tokens(token_registry: tuple[RegistryServer, TokenServer]) -> Iterator[tuple[RegistryServer, TokenServer]]:
    reg, tokens = token_registry
    tokens.lifetime = 2
    tokens.requests.clear()
    yield reg, tokens
    tokens.lifetime, tokens.report_lifetime = 300, True


def _pulled_hello(store: ImageStore, ref: str, progress: NullProgress | None = None) -> None:
    img = pull(store, ref, progress=progress)
    (layer,) = store.snapshots.lowers(img.top_snapshot or "")
    assert (layer / "etc/hello").read_text() == "hello from an authenticated registry\n"


def _pull_token_requests(tokens: TokenServer) -> int:
    return sum("repository:private/hello:pull" in q.get("scope", []) for q in tokens.requests)


def test_bearer_token_renewed_when_it_runs_out(flex_home: Path,
                                              short_tokens: tuple[RegistryServer, TokenServer]) -> None:
    """Docker Hub's tokens live 300 s; a longer pull must renew its token (here: 2 s, announced as
    expires_in) instead of failing part way with 401."""
    reg, tokens = short_tokens
    save_login(reg.host, Credentials(USER, PASSWORD))
    _pulled_hello(ImageStore(Home.open()), f"{reg.host}/private/hello:1", _SlowPull(3.0))
    assert _pull_token_requests(tokens) == 2


def test_bearer_token_refused_early_is_fetched_again(flex_home: Path,
                                                    short_tokens: tuple[RegistryServer, TokenServer]) -> None:
    """A token server that does not say how long its tokens live (60 s assumed) and a registry that
    refuses the token after 2 s: the 401 brings a fresh token, once."""
    reg, tokens = short_tokens
    tokens.report_lifetime = False
    save_login(reg.host, Credentials(USER, PASSWORD))
    _pulled_hello(ImageStore(Home.open()), f"{reg.host}/private/hello:1", _SlowPull(3.0))
    assert _pull_token_requests(tokens) == 2


# -- Docker credential helpers ------------------------------------------------------------------

def _helper(bin_dir: Path, name: str, answer: str, *, code: int = 0) -> Path:
    """A `docker-credential-NAME` on PATH that logs what it was asked (argv and stdin) next to itself."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    log = bin_dir / f"{name}.log"
    script.write_text(f"#!/bin/sh\nread -r server\necho \"$1 $server\" >> {log}\ncat <<'EOF'\n{answer}\nEOF\n"
                      f"exit {code}\n")
    script.chmod(0o755)
    return log


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def _docker_config(data: dict[str, object]) -> None:
    docker = Path(os.environ["DOCKER_CONFIG"])
    docker.mkdir(parents=True, exist_ok=True)
    (docker / "config.json").write_text(json.dumps(data))


def test_creds_store_helper(flex_home: Path, basic_registry: RegistryServer, helpers: Path) -> None:
    log = _helper(helpers, "desk", json.dumps({"ServerURL": basic_registry.host, "Username": USER,
                                               "Secret": PASSWORD}))
    _docker_config({"credsStore": "desk", "auths": {basic_registry.host: {}}})
    _pulled_hello(ImageStore(Home.open()), f"{basic_registry.host}/private/hello:1")
    assert log.read_text() == f"get {basic_registry.host}\n"


def test_cred_helpers_per_registry_before_creds_store(flex_home: Path, basic_registry: RegistryServer,
                                                     helpers: Path) -> None:
    store_log = _helper(helpers, "desk", json.dumps({"Username": USER, "Secret": "wrong"}))
    ecr_log = _helper(helpers, "ecr", json.dumps({"Username": USER, "Secret": PASSWORD}))
    _docker_config({"credsStore": "desk", "credHelpers": {basic_registry.host: "ecr"}})
    _pulled_hello(ImageStore(Home.open()), f"{basic_registry.host}/private/hello:1")
    assert ecr_log.read_text() == f"get {basic_registry.host}\n"
    assert not store_log.exists()


def test_helper_without_credentials_and_missing_helper(flex_home: Path, basic_registry: RegistryServer,
                                                       helpers: Path) -> None:
    ref = f"{basic_registry.host}/private/hello:1"
    # "not found" from the helper: the plain auths entry still counts (here: none, so 401)
    _helper(helpers, "desk", "credentials not found in native keychain", code=1)
    _docker_config({"credsStore": "desk"})
    res = run_flex("image", "pull", ref)
    assert res.code == 5 and "authentication required" in res.stderr, res.stderr
    # a helper that is not installed is said so, not silently skipped
    _docker_config({"credHelpers": {basic_registry.host: "gone"}})
    res = run_flex("image", "pull", ref)
    assert res.code == 1, res.stderr
    assert "docker-credential-gone, which is not on PATH" in res.stderr and "Traceback" not in res.stderr
    # a broken helper: one line with its last words
    _helper(helpers, "broken", "cannot reach the keychain", code=3)
    _docker_config({"credsStore": "broken"})
    res = run_flex("image", "pull", ref)
    assert res.code == 1 and "(exit 3): cannot reach the keychain" in res.stderr, res.stderr


def test_no_helper_runs_for_a_registry_without_auth(flex_home: Path, registry: RegistryServer,
                                                    helpers: Path, tmp_path: Path) -> None:
    skopeo_push(_small_image(tmp_path / "img"), "test", registry, "public/hello:1")
    log = _helper(helpers, "desk", json.dumps({"Username": USER, "Secret": PASSWORD}))
    _docker_config({"credsStore": "desk"})
    _pulled_hello(ImageStore(Home.open()), f"{registry.host}/public/hello:1")
    assert not log.exists()


def test_identity_token_from_helper(flex_home: Path, token_registry: tuple[RegistryServer, TokenServer],
                                    helpers: Path) -> None:
    """Helpers of cloud registries (and Docker Desktop) answer `<token>` + an identity token, which is
    exchanged at the realm with an OAuth2 refresh_token POST."""
    reg, tokens = token_registry
    tokens.identity_token = "refresh-me-please"
    _helper(helpers, "cloud", json.dumps({"Username": "<token>", "Secret": "refresh-me-please"}))
    _docker_config({"credHelpers": {reg.host: "cloud"}})
    tokens.requests.clear()
    try:
        _pulled_hello(ImageStore(Home.open()), f"{reg.host}/private/hello:1")
    finally:
        tokens.identity_token = None
    assert [q.get("grant_type") for q in tokens.requests] == [["refresh_token"]] * len(tokens.requests)
    assert tokens.requests and tokens.requests[0]["scope"] == ["repository:private/hello:pull"]
