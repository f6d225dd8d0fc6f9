"""`flex build` on flex's own builder with the shipped defaults, as root: a Dockerfile config plus local
features (one depending on the other), the devcontainer.metadata label in the reference's format, one cached
layer per feature (an unchanged rebuild runs nothing; changing one feature's options rebuilds that feature
and those after it, nothing before), and a failing install.sh reported with its step."""

from __future__ import annotations

import json
from pathlib import Path

from flex.devcontainer.features.merge import label_value
from flex.runtime.base.home import Home
from flex.runtime.images.store import ImageStore
from tests.devcontainer.features_helpers import write_feature
from tests.runtime.build.conftest import Builds, build_root, root_builds  # noqa: F401  (fixtures)


def _workspace(b: Builds, options: dict[str, str], install_b: str = "echo b >> /log\n") -> Path:
    ws = b.context("ws-features", {".devcontainer/Dockerfile": f"FROM {b.base}\nRUN echo from-dockerfile > /df\n"})
    dc = ws / ".devcontainer"
    write_feature(dc / "a", {"id": "a", "version": "1.0.0", "options": {"word": {"type": "string", "default": "x"}},
                             "containerEnv": {"A_HOME": "/opt/a"}, "postCreateCommand": "echo a-hook"},
                  'echo "a $WORD" >> /log\n')
    write_feature(dc / "b", {"id": "b", "version": "1.0.0", "dependsOn": {"./a": {}}, "privileged": True}, install_b)
    write_feature(dc / "c", {"id": "c", "version": "1.0.0", "options": {"n": {"type": "string", "default": "1"}}},
                  'echo "c $N" >> /log\n')
    config = {"build": {"dockerfile": "Dockerfile"}, "features": {"./b": {}, "./c": options},
              "remoteUser": "root", "postCreateCommand": "echo config-hook"}
    (dc / "devcontainer.json").write_text(json.dumps(config))
    return ws


def _build(b: Builds, ws: Path) -> tuple[list[str], list[str]]:
    r = b.flex("build", "--workspace-folder", str(ws), "--image-name", "flextest/features:1", "--json")
    assert r.code == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == {"outcome": "success", "imageName": ["flextest/features:1"]}
    steps = [line for line in r.stderr.splitlines() if line.startswith("Dockerfile.extended:")]
    return [s for s in steps if "(cached)" not in s], steps


def test_dockerfile_and_features_build_and_cache(root_builds: Builds) -> None:  # noqa: F811
    b = root_builds
    ws = _workspace(b, {"n": "1"})
    ran, _ = _build(b, ws)
    assert any("./devcontainer-features-install.sh" in s for s in ran)
    config = ImageStore(Home.open(b.mode.home)).get("flextest/features:1").config["config"]
    label = config["Labels"]["devcontainer.metadata"]
    # install order by the reference's rounds: a and c (no dependencies, alphabetical), then b
    assert label == label_value([{"id": "./a", "postCreateCommand": "echo a-hook"}, {"id": "./c"},
                                 {"id": "./b", "privileged": True},
                                 {"postCreateCommand": "echo config-hook", "remoteUser": "root"}])
    assert "A_HOME=/opt/a" in config["Env"]
    # unchanged: every step cached
    ran, steps = _build(b, ws)
    assert ran == [] and steps
    # c's options change: c and b (after it) install again, a (before it) and the Dockerfile's RUN do not
    _workspace(b, {"n": "2"})
    ran, _ = _build(b, ws)
    installs = [s for s in ran if "devcontainer-features-install.sh" in s]
    assert [("c_1" in s, "b_2" in s) for s in installs] == [(True, False), (False, True)]
    assert not any("from-dockerfile" in s or "a_0" in s for s in ran)


def test_failing_feature_names_its_step(root_builds: Builds) -> None:  # noqa: F811
    b = root_builds
    ws = _workspace(b, {}, install_b="echo about to fail\nexit 3\n")
    r = b.flex("build", "--workspace-folder", str(ws), "--json")
    assert r.code != 0
    out = json.loads(r.stdout)
    assert out["outcome"] == "error" and "b_2" in out["message"]
    assert "Traceback" not in r.stderr


def test_update_remote_user_uid_layer(root_builds: Builds) -> None:  # noqa: F811
    """updateRemoteUserUID's layer, given the workspace owner's ids inside: remoteUser and its home get them;
    a uid another user holds changes nothing, a gid another group holds keeps the user's gid; root, and a
    config that says false, get no layer."""
    b = root_builds
    dockerfile = (f"FROM {b.base}\nRUN useradd -m -u 1000 -U dev && useradd -M -u 4000 other "
                  "&& groupadd -g 5000 taken && touch /home/dev/.profile-of-dev "
                  "&& chown dev:dev /home/dev/.profile-of-dev\n")

    def build(ids: str, **config: object) -> tuple[str, str]:
        ws = b.context("ws-uid", {".devcontainer/Dockerfile": dockerfile, ".devcontainer/devcontainer.json":
                                  json.dumps({"build": {"dockerfile": "Dockerfile"}, "remoteUser": "dev", **config})})
        r = b.flex("build", "--workspace-folder", str(ws), "--remote-user-uid", ids, "--image-name",
                   "flextest/uid:1", "--json")
        assert r.code == 0, r.stderr[-3000:]
        assert json.loads(r.stdout) == {"outcome": "success", "imageName": ["flextest/uid:1"]}
        ran = b.mode.ok("run", "--rm", "flextest/uid:1", "sh", "-c",
                        "echo $(id -u dev):$(id -g dev) $(stat -c %u:%g /home/dev /home/dev/.profile-of-dev) "
                        "$(id -un)")
        return ran.strip(), r.stderr

    assert build("4321:4321")[0] == "4321:4321 4321:4321 4321:4321 root"
    assert build("4000:4000")[0] == "1000:1000 1000:1000 1000:1000 root"  # uid 4000 is other's
    assert build("4322:5000")[0] == "4322:1000 4322:1000 4322:1000 root"  # gid 5000 is taken's
    out, log = build("4321:4321", updateRemoteUserUID=False)
    assert out == "1000:1000 1000:1000 1000:1000 root" and "updateRemoteUserUID" not in log
    out, log = build("4321:4321", remoteUser="root")
    assert out == "1000:1000 1000:1000 1000:1000 root" and "updateRemoteUserUID" not in log
    r = b.flex("build", "--workspace-folder", str(b.scratch / "ws-uid"), "--remote-user-uid", "dev")
    assert r.code == 7 and "expected UID or UID:GID" in r.stderr
