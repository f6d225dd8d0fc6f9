"""A devcontainer.json → the container the runner makes: defaults as the reference CLI's, hook forms,
and what this runner does not do yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from flex.runner.container_plan import KEEP_ALIVE, Hook, PlanError, plan_container


def test_defaults_follow_the_reference_cli() -> None:
    p = plan_container({"image": "debian"}, "app")
    assert p.workspace_folder == "/workspaces/app" and p.override_command and p.wait_for == "updateContentCommand"
    assert p.hooks == () and p.remote_user is None and KEEP_ALIVE[0] == "/bin/sh"


def test_hooks_in_string_array_and_object_forms() -> None:
    p = plan_container({"image": "debian", "postStartCommand": {"a": "echo a", "b": ["echo", "b"]},
                        "onCreateCommand": "make", "postCreateCommand": ["npm", "ci"], "updateContentCommand": ""},
                       "app")
    assert p.hooks == (Hook("onCreateCommand", {"": ["/bin/sh", "-c", "make"]}),
                       Hook("postCreateCommand", {"": ["npm", "ci"]}),
                       Hook("postStartCommand", {"a": ["/bin/sh", "-c", "echo a"], "b": ["echo", "b"]}))


def test_users_env_ports_and_override() -> None:
    p = plan_container({"image": "i", "containerUser": "dev", "containerEnv": {"A": "1"}, "forwardPorts": [3000,
                        "db:5432"], "overrideCommand": False, "workspaceFolder": "/src"}, "app")
    assert (p.container_user, p.remote_user, p.container_env) == ("dev", "dev", {"A": "1"})
    assert p.forward_ports == (3000,) and not p.override_command and p.workspace_folder == "/src"


def test_ports_attributes_visibility_makes_a_preview_public() -> None:
    attrs = {"3000": {"visibility": "public"}, "localhost:3001": {"visibility": "private"}, "8080": {"label": "web"},
             "99999": {"visibility": "public"}}
    p = plan_container({"image": "x", "forwardPorts": [3000, 3001], "portsAttributes": attrs}, "e")
    assert p.public_ports == (3000,)
    assert plan_container({"image": "x", "portsAttributes": "no"}, "e").public_ports == ()


@pytest.mark.parametrize(("config", "reason"), [
    ({"build": {"dockerfile": "Dockerfile"}}, "BuildNotSupported"),
    ({"image": "i", "features": {"ghcr.io/devcontainers/features/node:1": {}}}, "BuildNotSupported"),
    ({"dockerComposeFile": "c.yml", "service": "app"}, "ComposeNotSupported"),
    ({"name": "no image"}, "InvalidDevcontainer"),
    ({"image": "i", "waitFor": "never"}, "InvalidDevcontainer"),
])
def test_what_this_runner_does_not_do_says_so(config: dict[str, object], reason: str) -> None:
    with pytest.raises(PlanError) as err:
        plan_container(config, "app")
    assert err.value.reason == reason and err.value.message


def test_properties_parse_as_the_reference_writes_them() -> None:
    from flex.runner.mounts import Mount

    p = plan_container({"image": "debian", "forwardPorts": [3000, "localhost:5000", "db:5432"],
                        "appPort": ["8080:80", 9000], "capAdd": ["SYS_PTRACE", "CAP_NET_ADMIN"],
                        "securityOpt": ["no-new-privileges:true", "label=disable"],
                        "hostRequirements": {"cpus": 2, "memory": "4gb", "storage": "32GB"},
                        "mounts": ["source=cache,target=/cache,type=volume",
                                   {"source": "/w/data", "target": "/data", "type": "bind", "readonly": True}],
                        "remoteEnv": {"A": "1", "B": None}, "userEnvProbe": "loginShell", "init": False}, "app")
    assert p.forward_ports == (3000, 5000, 80, 9000)  # another service's port ("db:5432") is not ours
    assert p.cap_add == ("CAP_SYS_PTRACE", "CAP_NET_ADMIN") and p.no_new_privileges and not p.init
    assert (p.host_requirements.cpus, p.host_requirements.memory, p.host_requirements.storage) == \
        (2, 4 << 30, 32 << 30)
    assert p.mounts == (Mount("volume", "cache", "/cache"), Mount("bind", "/w/data", "/data", True))
    assert p.remote_env == {"A": "1", "B": None} and p.user_env_probe == "-lc"


@pytest.mark.parametrize(("config", "says"), [
    ({"capAdd": ["ALL"]}, "capAdd"),
    ({"securityOpt": ["seccomp=unconfined"]}, "securityOpt"),
    ({"mounts": ["source=/x,target=relative,type=bind"]}, "absolute"),
    ({"mounts": ["source=a b,target=/x,type=volume"]}, "volume name"),
    ({"mounts": ["source=x,target=/x,type=tmpfs"]}, "not supported"),
    ({"workspaceMount": "source=/w,target=/w,type=bind"}, "workspaceFolder"),
    ({"userEnvProbe": "zsh"}, "userEnvProbe"),
    ({"hostRequirements": {"memory": "lots"}}, "hostRequirements.memory"),
])
def test_bad_properties_say_which(config: dict[str, object], says: str) -> None:
    with pytest.raises(PlanError) as err:
        plan_container({"image": "debian", **config}, "app")
    assert err.value.reason == "InvalidDevcontainer" and says in err.value.message


def test_bind_sources_stay_inside_the_workspace_on_a_vm_runner(tmp_path: Path) -> None:
    from flex.runner.mounts import Mount, MountError, place_mounts

    ws, vols = tmp_path / "ws", tmp_path / "vols"
    (ws / "data").mkdir(parents=True)
    (ws / "escape").symlink_to("/etc")
    vols.mkdir()
    binds, made = place_mounts((Mount("bind", str(ws / "data"), "/data"), Mount("volume", "cache", "/c", True)),
                               ws, vols, desktop=False)
    assert binds == [f"{ws / 'data'}:/data", f"{vols / '.volumes' / 'cache'}:/c:ro"]
    assert made == [vols / ".volumes" / "cache"]
    for outside in ("/etc", str(ws / "escape"), str(ws / ".." / "vols")):
        with pytest.raises(MountError, match="inside the workspace"):
            place_mounts((Mount("bind", outside, "/x"),), ws, vols, desktop=False)
    assert place_mounts((Mount("bind", "/etc", "/x"),), ws, vols, desktop=True)[0] == ["/etc:/x"]
