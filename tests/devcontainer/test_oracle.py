"""flex against the devcontainers reference CLI (`devcontainer read-configuration`), the oracle.

Where flex must agree: the configuration after substitution, the workspace folder and mount, and the
config file path. Where flex deliberately differs, each difference is shown here against the real CLI:
flex rejects what is not JSONC (the reference guesses), validates against the schema (the reference does
not), substitutes ${devcontainerId} early (the reference waits for a container; the value is the same),
finds `.devcontainer/<name>/devcontainer.json` as the spec describes, reports `workspaceMount: null` for
Docker Compose (the reference omits it), and keeps the config path out of `configuration`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flex.devcontainer.config import read_config
from flex.errors import InvalidConfiguration
from tests.conftest import REPO, missing, run_flex
from tests.devcontainer.conftest import WriteConfig
from tests.devcontainer.test_schema import COMPOSE_CONFIG, DOCKERFILE_CONFIG, IMAGE_CONFIG, LEGACY_DOCKERFILE_CONFIG

pytestmark = pytest.mark.oracle

REFERENCE = REPO / ".cache" / "devcontainers-cli" / "node_modules" / ".bin" / "devcontainer"
ENV = {"HOME": "/home/tester", "MY_VARIABLE": "my value", "EMPTY": "", "USER": "tester"}


@pytest.fixture(scope="module", autouse=True)
def _reference_installed() -> None:
    if not REFERENCE.exists():
        missing(f"the reference CLI is not installed at {REFERENCE} (installer/install.sh --dev installs it)")


def reference(folder: Path, *args: str, docker: str = "/bin/true", env: dict[str, str] | None = None,
              ok: bool = True) -> tuple[int, dict[str, Any] | None, str]:
    """Run `devcontainer read-configuration`; (exit code, its JSON or None, stderr)."""
    full_env = {"PATH": os.environ["PATH"], **ENV, **(env or {})}
    proc = subprocess.run([str(REFERENCE), "read-configuration", "--workspace-folder", str(folder),
                           "--docker-path", docker, *args], capture_output=True, text=True, timeout=120,
                          env=full_env, cwd=folder.parent)
    data = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None
    if ok:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.returncode, data, proc.stderr


def flex(folder: Path, config: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    resolved = read_config(folder, config, env={"PATH": os.environ["PATH"], **ENV, **(env or {})},
                           cwd=folder.parent)
    data = resolved.to_json()
    # ${devcontainerId} is substituted early by flex only: put it back to compare the rest
    text = json.dumps(data).replace(resolved.devcontainer_id, "${devcontainerId}")
    out: dict[str, Any] = json.loads(text)
    return out


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def assert_agree(folder: Path, *ref_args: str, config: str | None = None, env: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    _, ref, _ = reference(folder, *ref_args, env=env)
    assert ref is not None
    ours = flex(folder, config, env)
    config_path = ref["configuration"].pop("configFilePath")
    assert ours["configuration"] == ref["configuration"]
    # and as text: in Python 1 == 1.0 == True, in the output they differ
    assert canonical(ours["configuration"]) == canonical(ref["configuration"])
    assert ours["workspace"]["workspaceFolder"] == ref["workspace"]["workspaceFolder"]
    assert ours["workspace"]["workspaceMount"] == ref["workspace"].get("workspaceMount")
    assert ours["workspace"]["configFile"] == config_path["fsPath"]
    return ours


CASES: dict[str, Any] = {
    "minimal": {"image": "debian"},
    "full-image": IMAGE_CONFIG,
    "dockerfile": DOCKERFILE_CONFIG,
    "legacy-moved-to-customizations": LEGACY_DOCKERFILE_CONFIG,
    "legacy-devport-kept-when-set": {"image": "x", "devPort": 1, "customizations": {"vscode": {"devPort": 2}}},
    "compose-folder-set": COMPOSE_CONFIG,
    "every-variable": {
        "image": "x",
        "containerEnv": {
            "A": "${localEnv:MY_VARIABLE}", "B": "${localEnv:NOPE:default}", "C": "${localEnv:NOPE}",
            "D": "${env:HOME}", "E": "${localEnv:NOPE:a:b}", "F": "${localEnv:EMPTY:x}",
            "G": "${localWorkspaceFolder}", "H": "${localWorkspaceFolderBasename}",
            "I": "${containerWorkspaceFolder}", "J": "${containerWorkspaceFolderBasename}",
            "K": "${devcontainerId}", "L": "${containerEnv:PATH}", "M": "${unknown}", "N": "${localEnv:HOME",
        },
        "mounts": ["source=${localEnv:HOME}/.ssh,target=/root/.ssh,type=bind"],
        "customizations": {"x": {"${localEnv:HOME}": ["${localWorkspaceFolderBasename}", 1, None, True]}},
    },
    "workspace-folder-set": {"image": "x", "workspaceFolder": "/src/${localEnv:USER}",
                             "postStartCommand": "cd ${containerWorkspaceFolder}"},
    "workspace-mount-set": {"image": "x", "workspaceMount": "source=${localWorkspaceFolder},target=/c,type=bind",
                            "postStartCommand": "cd ${containerWorkspaceFolder}"},
    "both-set": {"image": "x", "workspaceMount": "", "workspaceFolder": "/"},
    "workspace-folder-empty": {"image": "x", "workspaceFolder": ""},
    "numbers-and-strings": '{"image": "x", "hostRequirements": {"cpus": 2.0}, "features": {"f": {"n": 1e3, '
                           '"s": "caf\\u00e9 \\/ \\"q\\" \\t", "u": "\u263a"}}, "name": "1.50"}',
    "jsonc": '// comment\n{\n  /* c */ "image": "x", // trailing\n  "forwardPorts": [1, 2,],\n}\n',
    "empty-commands": {"image": "x", "postCreateCommand": "", "onCreateCommand": [], "postStartCommand": {}},
}


@pytest.mark.parametrize("name", list(CASES))
def test_agrees_with_the_reference(name: str, write_config: WriteConfig) -> None:
    path = write_config(CASES[name])
    assert_agree(path.parents[1])


def test_agrees_on_dot_devcontainer_json(write_config: WriteConfig) -> None:
    path = write_config({"image": "root-file"}, at=".devcontainer.json")
    assert assert_agree(path.parent)["configuration"]["image"] == "root-file"


def test_agrees_on_which_file_wins(write_config: WriteConfig) -> None:
    write_config({"image": "folder"})
    path = write_config({"image": "root-file"}, at=".devcontainer.json")
    assert assert_agree(path.parent)["configuration"]["image"] == "folder"


def test_agrees_with_an_explicit_config(write_config: WriteConfig) -> None:
    path = write_config({"image": "other"}, at="configs/dev.json")
    folder = path.parents[1]
    out = assert_agree(folder, "--config", str(path), config=str(path))
    assert out["workspace"]["configFile"] == str(path)


def test_agrees_inside_a_git_repository(write_config: WriteConfig, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    path = write_config({"image": "x", "postCreateCommand": "ls ${containerWorkspaceFolder}"}, folder="repo/a/b")
    out = assert_agree(path.parents[1])
    assert out["workspace"]["workspaceFolder"] == "/workspaces/repo/a/b"


def test_agrees_on_paths_with_commas_and_spaces(write_config: WriteConfig) -> None:
    path = write_config({"image": "x"}, folder="my project,v2")
    out = assert_agree(path.parents[1])
    assert '"source=' in out["workspace"]["workspaceMount"]


def test_agrees_on_the_example_project() -> None:
    assert_agree(REPO / "examples" / "python")


# -- deliberate differences ------------------------------------------------------------------------------
FAKE_DOCKER = '''#!{python}
"""Stands in for docker so the reference CLI believes a container exists: it answers `ps` with one id and
`inspect` with a container carrying exactly the labels the CLI asked for."""
import json, sys
state = {state!r}
args = sys.argv[1:]
if args[0] == "ps":
    labels = dict(a.split("=", 1)[1].split("=", 1) for a in args if a.startswith("label="))
    json.dump(labels, open(state, "w"))
    print("c0ffee")
elif args[0] == "inspect":
    labels = json.load(open(state))
    print(json.dumps([{{"Id": "c0ffee", "Created": "2024-01-01T00:00:00Z", "Name": "/c",
                       "State": {{"Status": "running", "StartedAt": "2024-01-01T00:00:00Z"}},
                       "Config": {{"Image": "x", "User": "", "Env": [], "Labels": labels}},
                       "Mounts": [], "NetworkSettings": {{"Ports": {{}}}}, "Ports": []}}]))
'''


def test_devcontainer_id_equals_the_references_once_a_container_exists(write_config: WriteConfig,
                                                                      tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(tmp_path / "labels.json")))
    docker.chmod(0o755)
    path = write_config({"image": "x", "containerEnv": {"ID": "${devcontainerId}"}})
    folder = path.parents[1]
    _, before, _ = reference(folder)  # no container: the reference leaves the variable
    assert before is not None and before["configuration"]["containerEnv"]["ID"] == "${devcontainerId}"
    _, after, _ = reference(folder, docker=str(docker))
    assert after is not None
    ours = read_config(folder, env=ENV).configuration["containerEnv"]["ID"]
    assert ours == after["configuration"]["containerEnv"]["ID"]
    assert len(ours) == 52


@pytest.mark.parametrize("text", [
    '{"image": "x" "name": "y"}',      # missing comma: the reference reads on
    "{'image': 'x'}",                  # single quotes: the reference returns an empty configuration
    '{image: "x"}',                    # unquoted key: likewise
    '{"image": "x", "a": 0x10}',       # hex: the reference reads 0
    '{"image": "x", "image": "y"}',    # duplicate: the reference keeps the last
    '{"image": "x",,}',                # double comma
])
def test_flex_rejects_what_the_reference_guesses(text: str, write_config: WriteConfig) -> None:
    path = write_config(text)
    code, _, _ = reference(path.parents[1])
    assert code == 0
    with pytest.raises(InvalidConfiguration) as info:
        read_config(path.parents[1], env=ENV)
    assert info.value.details["line"] == 1


@pytest.mark.parametrize("config", [
    {"image": "x", "forwardPorts": [70000]},
    {"image": "x", "forwardPorts": ["abc"]},
    {"image": "x", "postCreateCommand": 42},
    {"image": "x", "postCreateCommand": {"a": {"b": "c"}}},
    {"image": "x", "init": "yes"},
    {"image": "x", "forwardPort": [3000]},
    {"image": "x", "build": {"dockerfile": "Dockerfile"}},
])
def test_flex_validates_what_the_reference_passes_through(config: dict[str, Any], write_config: WriteConfig) -> None:
    path = write_config(config)
    _, ref, _ = reference(path.parents[1])
    assert ref is not None
    r = run_flex("config", "read", "-w", str(path.parents[1]), "--json")
    assert r.code == 7 and r.stdout == ""
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 2


def test_flex_finds_a_named_subfolder_the_reference_does_not(write_config: WriteConfig) -> None:
    path = write_config({"image": "x"}, at=".devcontainer/python/devcontainer.json")
    code, _, _ = reference(path.parents[2], ok=False)
    assert code != 0
    assert read_config(path.parents[2], env=ENV).workspace.config_file == str(path)


def test_compose_workspace_mount_is_null_in_flex_and_absent_in_the_reference(write_config: WriteConfig) -> None:
    path = write_config({"dockerComposeFile": "c.yml", "service": "s", "workspaceFolder": "/w"})
    _, ref, _ = reference(path.parents[1])
    assert ref is not None and "workspaceMount" not in ref["workspace"]
    assert flex(path.parents[1])["workspace"]["workspaceMount"] is None


FRAGMENTS = ["${", "}", "{", "$", ":", "localEnv", "env", "MY_VARIABLE", "NOPE", "EMPTY", "HOME", "default",
             "localWorkspaceFolder", "localWorkspaceFolderBasename", "containerWorkspaceFolder",
             "containerWorkspaceFolderBasename", "containerEnv", "devcontainerId", "x", " ", "\r", "\n", "\t",
             "\u2028", "é", "\\", "/", "${localEnv:", "${containerWorkspaceFolder}", "${env:HOME}"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agrees_on_random_strings_full_of_variables(seed: int, write_config: WriteConfig) -> None:
    import random

    rng = random.Random(seed)
    values = {f"V{i}": "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12))) for i in range(300)}
    # a missing name is an error in both
    values = {k: v for k, v in values.items() if "${localEnv}" not in v and "${env}" not in v}
    path = write_config({"image": "x", "containerEnv": values,
                         "workspaceFolder": "/w/${localEnv:MY_VARIABLE}/${localWorkspaceFolderBasename}"})
    assert_agree(path.parents[1])


def _random_jsonc(rng: Any, depth: int = 0) -> str:
    """A random JSONC value: comments and odd whitespace between tokens, trailing commas here and there."""

    def ws() -> str:
        return str(rng.choice(["", "", " ", "\n  ", "\t", " /* c */ ", " // line\n", "\r\n", "/**/"]))

    kind = rng.randint(0, 9) if depth < 4 else rng.randint(0, 5)
    if kind <= 1:
        return str(rng.choice(["0", "-0", "7", "-12", "3.25", "1e3", "2.5E-3", "1E+2", "-0.5", "123456789012",
                               "9007199254740993", "1.0", "0.1", "1e-7"]))
    if kind == 2:
        return str(rng.choice(["true", "false", "null"]))
    if kind <= 5:
        parts = ["a", "é", "\\n", "\\u00e9", "\\ud83d\\ude00", "\\/", '\\"', "\\\\", " ", "\u2028", "☺", "x y",
                 "\\t", "\\b\\f\\r"]
        return '"' + "".join(rng.choice(parts) for _ in range(rng.randint(0, 6))) + '"'
    items = [_random_jsonc(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    trailing = "," + ws() if items and rng.random() < 0.4 else ""
    if kind <= 7:
        return "[" + ws() + ("," + ws()).join(items) + trailing + ws() + "]"
    keys = [f'"k{i}{rng.choice(["", "é", "/", "~", " "])}"' for i in range(len(items))]
    members = [f"{ws()}{k}{ws()}:{ws()}{v}" for k, v in zip(keys, items, strict=True)]
    return "{" + ",".join(members) + trailing + ws() + "}"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_agrees_on_random_valid_jsonc(seed: int, write_config: WriteConfig) -> None:
    import random

    rng = random.Random(seed)
    fuzz = ",".join(f'"f{i}": {_random_jsonc(rng)}' for i in range(40))
    path = write_config('// random JSONC\n{"image": "x", "customizations": {' + fuzz + ',},}\n')
    out = assert_agree(path.parents[1])
    assert len(out["configuration"]["customizations"]) == 40
