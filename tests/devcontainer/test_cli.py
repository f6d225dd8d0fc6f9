"""`flex config read|validate|schema` as a person meets them: the real command line in a subprocess, its
output streams and its documented exit codes (0 ok, 2 usage, 3 not found, 7 invalid configuration)."""

from __future__ import annotations

import json
from pathlib import Path

from flex.devcontainer.schema import load_schema
from tests.conftest import REPO, run_flex
from tests.devcontainer.conftest import WriteConfig


def test_read_json_prints_one_object_on_stdout(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config('// JSONC\n{"image": "debian", "name": "${localEnv:WHO:nobody}",}\n')
    r = run_flex("config", "read", "--workspace-folder", str(tmp_path / "proj"), "--json", env={"WHO": "me"})
    assert r.code == 0, r.stderr
    assert r.stdout.count("\n") == 1
    data = json.loads(r.stdout)
    assert data == {
        "configuration": {"image": "debian", "name": "me"},
        "workspace": {"workspaceFolder": "/workspaces/proj",
                      "workspaceMount": f"type=bind,source={tmp_path}/proj,target=/workspaces/proj",
                      "configFile": str(path)},
    }


def test_read_defaults_to_the_current_directory(write_config: WriteConfig, tmp_path: Path) -> None:
    write_config({"image": "debian"}, at=".devcontainer.json")
    r = run_flex("config", "read", "--json", cwd=tmp_path / "proj")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["workspace"]["configFile"] == str(tmp_path / "proj" / ".devcontainer.json")


def test_read_with_config_file(write_config: WriteConfig, tmp_path: Path) -> None:
    write_config({"image": "a"})
    other = write_config({"image": "b"}, at="other.json")
    r = run_flex("config", "read", "-w", "proj", "--config", "proj/other.json", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["configuration"]["image"] == "b"
    assert data["workspace"]["configFile"] == str(other)


def test_read_without_json_prints_a_readable_summary(write_config: WriteConfig, tmp_path: Path) -> None:
    write_config({"name": "demo", "image": "debian", "forwardPorts": [3000, "db:5432"],
                  "features": {"ghcr.io/devcontainers/features/git:1": {}},
                  "postCreateCommand": ["make", "setup"]})
    r = run_flex("config", "read", "-w", str(tmp_path / "proj"))
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "name:" in lines[1] and "demo" in lines[1]
    assert any(line.startswith("image:") and line.endswith("debian") for line in lines)
    assert any(line.startswith("workspace folder:") and line.endswith("/workspaces/proj") for line in lines)
    assert any(line.startswith("forward ports:") and line.endswith("3000, db:5432") for line in lines)
    assert any("ghcr.io/devcontainers/features/git:1" in line for line in lines)
    assert any(line.startswith("postCreateCommand:") and '["make", "setup"]' in line for line in lines)


def test_legacy_properties_warn_on_stderr_only(write_config: WriteConfig, tmp_path: Path) -> None:
    write_config({"image": "debian", "extensions": ["ms-python.python"]})
    r = run_flex("config", "read", "-w", str(tmp_path / "proj"), "--json")
    assert r.code == 0
    assert json.loads(r.stdout)["configuration"]["customizations"] == {"vscode": {"extensions": ["ms-python.python"]}}
    assert "warning:" in r.stderr and "'extensions' is deprecated" in r.stderr


def test_a_syntax_error_exits_7_with_one_line(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config('{\n  "image": \'debian\'\n}')
    r = run_flex("config", "read", "-w", str(tmp_path / "proj"), "--json")
    assert r.code == 7
    assert r.stdout == ""
    assert r.stderr.splitlines() == [f"error: {path}:2:12: single-quoted strings are not JSON: use double quotes"]


def test_a_schema_error_exits_7_with_the_pointer(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config('{\n  "image": "debian",\n  "forwardPorts": ["abc"]\n}')
    r = run_flex("config", "read", "-w", str(tmp_path / "proj"))
    assert r.code == 7
    assert r.stderr.splitlines() == [
        f'error: {path}:3:20: /forwardPorts/0: expected a port number (0-65535) or a "host:port" string, '
        'got the string "abc"']


def test_an_unknown_property_exits_7_with_a_hint(write_config: WriteConfig, tmp_path: Path) -> None:
    write_config({"image": "debian", "postCreateComand": "make"})
    r = run_flex("config", "validate", "-w", str(tmp_path / "proj"))
    assert r.code == 7
    lines = r.stderr.splitlines()
    assert lines[0].endswith("/postCreateComand: unknown property 'postCreateComand'")
    assert lines[1] == "hint: did you mean 'postCreateCommand'?"
    assert "Traceback" not in r.stderr


def test_debug_shows_the_traceback(write_config: WriteConfig, tmp_path: Path) -> None:
    write_config('{"image": 1}')
    for args in (["--debug", "config", "read"], ["config", "read", "--debug"]):
        r = run_flex(*args, "-w", str(tmp_path / "proj"))
        assert r.code == 7
        assert "Traceback" in r.stderr and "InvalidConfiguration" in r.stderr


def test_no_configuration_exits_3_with_a_hint(tmp_path: Path) -> None:
    r = run_flex("config", "read", "-w", str(tmp_path))
    assert r.code == 3
    assert r.stderr.splitlines() == [f"error: no devcontainer configuration in {tmp_path}",
                                     "hint: create .devcontainer/devcontainer.json (or .devcontainer.json), "
                                     "or pass --config FILE"]


def test_a_missing_workspace_folder_or_config_exits_3(tmp_path: Path) -> None:
    assert run_flex("config", "read", "-w", str(tmp_path / "nope")).code == 3
    assert run_flex("config", "read", "-w", str(tmp_path), "--config", "nope.json", cwd=tmp_path).code == 3


def test_several_candidates_exit_2_listing_them(write_config: WriteConfig, tmp_path: Path) -> None:
    write_config({"image": "a"}, at=".devcontainer/a/devcontainer.json")
    write_config({"image": "b"}, at=".devcontainer/b/devcontainer.json")
    r = run_flex("config", "read", "-w", str(tmp_path / "proj"))
    assert r.code == 2
    assert ".devcontainer/a/devcontainer.json, .devcontainer/b/devcontainer.json" in r.stderr
    r = run_flex("config", "read", "-w", str(tmp_path / "proj"), "-c", "proj/.devcontainer/b/devcontainer.json",
                 "--json", cwd=tmp_path)
    assert r.code == 0 and json.loads(r.stdout)["configuration"] == {"image": "b"}


def test_validate_prints_ok(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config({"image": "debian"})
    r = run_flex("config", "validate", "-w", str(tmp_path / "proj"))
    assert (r.code, r.stdout) == (0, f"ok: {path}\n")


def test_schema_prints_the_schema() -> None:
    r = run_flex("config", "schema")
    assert r.code == 0
    assert json.loads(r.stdout) == load_schema()


def test_the_readme_example_works() -> None:
    r = run_flex("config", "read", "--workspace-folder", "examples/python", "--json", cwd=REPO)
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    cfg = data["configuration"]
    assert cfg["image"].startswith("mcr.microsoft.com/devcontainers/python")
    assert cfg["forwardPorts"] == [8000]
    assert "postCreateCommand" in cfg and "features" in cfg and "vscode" in cfg["customizations"]
    assert data["workspace"]["configFile"] == str(REPO / "examples/python/.devcontainer/devcontainer.json")
    folder = data["workspace"]["workspaceFolder"]
    # a git checkout mounts its root (as the reference CLI does); an unpacked tarball mounts the folder
    assert folder in (f"/workspaces/{REPO.name}/examples/python", "/workspaces/python")
    assert cfg["customizations"]["vscode"]["settings"]["python.defaultInterpreterPath"] == f"{folder}/.venv/bin/python"


def test_importing_the_command_group_stays_cheap() -> None:
    import subprocess
    import sys

    code = ("import sys, flex.cli.config, flex.devcontainer.config; "
            "print(sorted(m for m in ('fastapi', 'httpx', 'pyroute2', 'sqlalchemy', 'jsonschema', 'json5') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"  # jsonschema only once a file is validated
