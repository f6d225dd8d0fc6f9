"""Finding and resolving a configuration: the spec's lookup rules, the workspace folder and mount defaults
(as the reference CLI computes them on Linux), variables, legacy properties, and untrusted files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flex.devcontainer.config import (
    MAX_BYTES,
    candidates,
    devcontainer_id,
    find_config,
    parse_config,
    read_config,
)
from flex.errors import InvalidConfiguration, NotFound, UsageError
from tests.devcontainer.conftest import WriteConfig

IMAGE = {"image": "debian:bookworm"}


# -- lookup ---------------------------------------------------------------------------------------------
def test_dot_devcontainer_folder(write_config: WriteConfig) -> None:
    path = write_config(IMAGE)
    assert find_config(path.parent.parent) == path


def test_dot_devcontainer_json_at_the_root(write_config: WriteConfig) -> None:
    path = write_config(IMAGE, at=".devcontainer.json")
    assert find_config(path.parent) == path


def test_the_devcontainer_folder_wins_over_the_root_file(write_config: WriteConfig) -> None:
    first = write_config(IMAGE)
    write_config(IMAGE, at=".devcontainer.json")
    assert find_config(first.parent.parent) == first


def test_one_named_subfolder(write_config: WriteConfig) -> None:
    path = write_config(IMAGE, at=".devcontainer/python/devcontainer.json")
    assert find_config(path.parents[2]) == path


def test_several_named_subfolders_are_an_error_listing_them(write_config: WriteConfig) -> None:
    a = write_config(IMAGE, at=".devcontainer/python/devcontainer.json")
    write_config(IMAGE, at=".devcontainer/node/devcontainer.json")
    with pytest.raises(UsageError) as info:
        find_config(a.parents[2])
    assert ".devcontainer/node/devcontainer.json, .devcontainer/python/devcontainer.json" in info.value.message
    assert "--config" in (info.value.hint or "")


def test_a_primary_file_wins_over_named_subfolders(write_config: WriteConfig) -> None:
    primary = write_config(IMAGE, at=".devcontainer.json")
    write_config(IMAGE, at=".devcontainer/python/devcontainer.json")
    write_config(IMAGE, at=".devcontainer/node/devcontainer.json")
    assert find_config(primary.parent) == primary
    assert len(candidates(primary.parent)) == 3
    r = read_config(primary.parent, env={})
    assert r.workspace.config_file == str(primary)
    assert r.warnings == ("also found .devcontainer/node/devcontainer.json, .devcontainer/python/devcontainer.json: "
                          "pass --config to read one of them",)


def test_only_one_level_deep(write_config: WriteConfig) -> None:
    deep = write_config(IMAGE, at=".devcontainer/a/b/devcontainer.json")
    with pytest.raises(NotFound) as info:
        find_config(deep.parents[3])
    assert "no devcontainer configuration" in info.value.message
    assert info.value.hint and ".devcontainer/devcontainer.json" in info.value.hint


def test_a_directory_named_like_the_file_is_not_a_config(tmp_path: Path) -> None:
    (tmp_path / ".devcontainer" / "devcontainer.json").mkdir(parents=True)
    with pytest.raises(NotFound):
        find_config(tmp_path)


def test_missing_workspace_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        read_config(tmp_path / "nope")


def test_explicit_config_relative_to_cwd(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(IMAGE, at="elsewhere/my.json")
    folder = tmp_path / "proj"
    r = read_config(folder, "proj/elsewhere/my.json", cwd=tmp_path, env={})
    assert r.workspace.config_file == str(path)
    with pytest.raises(NotFound, match="does not exist"):
        read_config(folder, "proj/missing.json", cwd=tmp_path, env={})


def test_workspace_folder_defaults_to_cwd(write_config: WriteConfig) -> None:
    path = write_config(IMAGE)
    r = read_config(cwd=path.parents[1], env={})
    assert r.local_workspace_folder == str(path.parents[1])


# -- untrusted files ------------------------------------------------------------------------------------
def test_a_found_config_may_not_lead_outside_the_workspace(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"image": "x", "token": "s3cr3t"}')
    folder = tmp_path / "proj"
    (folder / ".devcontainer").mkdir(parents=True)
    (folder / ".devcontainer" / "devcontainer.json").symlink_to(secret)
    with pytest.raises(InvalidConfiguration) as info:
        read_config(folder, env={})
    assert "leads outside the workspace folder" in info.value.message
    assert "s3cr3t" not in info.value.message
    # named explicitly, it is the user's choice (and the schema then rejects the unknown property)
    with pytest.raises(InvalidConfiguration, match="unknown property 'token'"):
        read_config(folder, secret, env={})


def test_a_symlink_inside_the_workspace_is_fine(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "dc.json").write_text('{"image": "x"}')
    (folder / ".devcontainer.json").symlink_to(folder / "configs" / "dc.json")
    assert read_config(folder, env={}).configuration == {"image": "x"}


def test_huge_files_are_refused(write_config: WriteConfig) -> None:
    path = write_config('{"image": "x", "name": "' + "a" * MAX_BYTES + '"}')
    with pytest.raises(InvalidConfiguration, match="larger than"):
        read_config(path.parents[1], env={})


def test_invalid_utf8_names_line_and_column(write_config: WriteConfig) -> None:
    path = write_config("")
    path.write_bytes(b'{\n  "name": "caf\xe9"\n}')
    with pytest.raises(InvalidConfiguration) as info:
        read_config(path.parents[1], env={})
    assert info.value.details == {"file": str(path), "line": 2, "column": 15}


def test_a_syntax_error_names_file_line_and_column(write_config: WriteConfig) -> None:
    path = write_config('{\n  "image": "x"\n  "init": true\n}')
    with pytest.raises(InvalidConfiguration) as info:
        read_config(path.parents[1], env={})
    assert info.value.message == f"{path}:3:3: unexpected '\"': expected ',' or '}}'"
    assert info.value.details == {"file": str(path), "line": 3, "column": 3}


def test_a_variable_without_a_name_names_file_line_and_column(write_config: WriteConfig) -> None:
    path = write_config('{\n  "image": "x",\n  "containerEnv": {"A": "${localEnv}"}\n}')
    with pytest.raises(InvalidConfiguration) as info:
        read_config(path.parents[1], env={})
    assert info.value.message == (f"{path}:3:25: /containerEnv/A: '${{localEnv}}' can not be resolved because no "
                                  "environment variable name is given")
    assert info.value.details == {"file": str(path), "pointer": "/containerEnv/A", "line": 3, "column": 25}


def test_a_variable_without_a_name_in_workspace_folder(write_config: WriteConfig) -> None:
    path = write_config('{"image": "x", "workspaceFolder": "/w/${env}"}')
    with pytest.raises(InvalidConfiguration) as info:
        read_config(path.parents[1], env={})
    assert info.value.details == {"file": str(path), "pointer": "/workspaceFolder", "line": 1, "column": 35}


def test_fifos_and_directories_are_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    os.mkfifo(folder / "fifo.json")
    with pytest.raises(InvalidConfiguration, match="not a regular file"):
        read_config(folder, "fifo.json", cwd=folder, env={})
    (folder / "dir.json").mkdir()
    with pytest.raises(InvalidConfiguration, match="not a regular file"):
        read_config(folder, "dir.json", cwd=folder, env={})


def test_schema_errors_are_checked_after_substitution(write_config: WriteConfig) -> None:
    path = write_config({"image": "x", "forwardPorts": ["${localEnv:DBHOST}:5432"]})
    assert read_config(path.parents[1], env={"DBHOST": "db"}).configuration["forwardPorts"] == ["db:5432"]
    with pytest.raises(InvalidConfiguration) as info:
        read_config(path.parents[1], env={"DBHOST": "Bad Host"})
    assert info.value.details["pointer"] == "/forwardPorts/0"
    assert '"Bad Host:5432"' in info.value.message


# -- workspace folder and mount -------------------------------------------------------------------------
def test_defaults_outside_git(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(IMAGE)
    r = read_config(path.parents[1], env={})
    assert r.workspace.workspace_folder == "/workspaces/proj"
    assert r.workspace.workspace_mount == f"type=bind,source={tmp_path}/proj,target=/workspaces/proj"
    assert r.workspace.config_file == str(path)
    assert r.devcontainer_id == devcontainer_id(str(tmp_path / "proj"), str(path))


def _git_init(folder: Path) -> None:
    subprocess.run(["git", "init", "-q", str(folder)], check=True)


def test_inside_a_git_repository_the_root_is_mounted(write_config: WriteConfig, tmp_path: Path) -> None:
    _git_init(tmp_path / "repo")
    path = write_config(IMAGE, folder="repo/services/api")
    r = read_config(path.parents[1], env={})
    assert r.workspace.workspace_folder == "/workspaces/repo/services/api"
    assert r.workspace.workspace_mount == f"type=bind,source={tmp_path}/repo,target=/workspaces/repo"
    r = read_config(path.parents[1], env={}, mount_git_root=False)
    assert r.workspace.workspace_folder == "/workspaces/api"
    assert r.workspace.workspace_mount == f"type=bind,source={tmp_path}/repo/services/api,target=/workspaces/api"


def test_workspace_folder_set_mount_computed(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config({**IMAGE, "workspaceFolder": "/src/${localWorkspaceFolderBasename}"})
    r = read_config(path.parents[1], env={})
    assert r.workspace.workspace_folder == "/src/proj"
    assert r.workspace.workspace_mount == f"type=bind,source={tmp_path}/proj,target=/workspaces/proj"


def test_workspace_mount_set_folder_computed(write_config: WriteConfig) -> None:
    path = write_config({**IMAGE, "workspaceMount": "source=${localWorkspaceFolder},target=/code,type=bind"})
    r = read_config(path.parents[1], env={})
    assert r.workspace.workspace_folder == "/workspaces/proj"
    assert r.workspace.workspace_mount == f"source={path.parents[1]},target=/code,type=bind"


def test_workspace_mount_may_be_empty(write_config: WriteConfig) -> None:
    path = write_config({**IMAGE, "workspaceMount": "", "workspaceFolder": "/"})
    r = read_config(path.parents[1], env={})
    assert (r.workspace.workspace_folder, r.workspace.workspace_mount) == ("/", "")


def test_compose_has_no_mount(write_config: WriteConfig) -> None:
    path = write_config({"dockerComposeFile": "c.yml", "service": "app", "workspaceFolder": "/app"})
    r = read_config(path.parents[1], env={})
    assert (r.workspace.workspace_folder, r.workspace.workspace_mount) == ("/app", None)
    assert r.to_json()["workspace"]["workspaceMount"] is None


def test_a_comma_in_a_path_is_quoted_as_docker_needs(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(IMAGE, folder="a,b")
    r = read_config(path.parents[1], env={})
    assert r.workspace.workspace_mount == f'type=bind,"source={tmp_path}/a,b","target=/workspaces/a,b"'


def test_container_workspace_folder_variables_use_the_resolved_folder(write_config: WriteConfig) -> None:
    path = write_config({**IMAGE, "workspaceFolder": "/w/${localEnv:SUB}",
                         "postCreateCommand": "cd ${containerWorkspaceFolder} && ls "
                                              "${containerWorkspaceFolderBasename}"})
    r = read_config(path.parents[1], env={"SUB": "x"})
    assert r.configuration["postCreateCommand"] == "cd /w/x && ls x"
    assert r.configuration["workspaceFolder"] == "/w/x"
    assert r.workspace.workspace_folder == "/w/x"


def test_every_variable_in_a_real_file(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config({
        **IMAGE,
        "containerEnv": {
            "A": "${localEnv:A}", "B": "${localEnv:B:def}", "C": "${localWorkspaceFolder}",
            "D": "${localWorkspaceFolderBasename}", "E": "${containerWorkspaceFolder}",
            "F": "${containerWorkspaceFolderBasename}", "G": "${devcontainerId}", "H": "${containerEnv:PATH}",
        },
    })
    r = read_config(path.parents[1], env={"A": "a"})
    assert r.configuration["containerEnv"] == {
        "A": "a", "B": "def", "C": str(tmp_path / "proj"), "D": "proj", "E": "/workspaces/proj", "F": "proj",
        "G": devcontainer_id(str(tmp_path / "proj"), str(path)), "H": "${containerEnv:PATH}",
    }


def test_environment_defaults_to_the_process_environment(write_config: WriteConfig,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEX_TEST_VALUE", "from-env")
    path = write_config({**IMAGE, "name": "${localEnv:FLEX_TEST_VALUE}"})
    assert read_config(path.parents[1]).configuration["name"] == "from-env"


# -- legacy properties ----------------------------------------------------------------------------------
def test_legacy_vscode_properties_move_into_customizations(write_config: WriteConfig) -> None:
    path = write_config({**IMAGE, "extensions": ["a.b"], "settings": {"x": 1, "y": 1}, "devPort": 8000,
                         "customizations": {"vscode": {"extensions": ["c.d"], "settings": {"y": 2}}}})
    r = read_config(path.parents[1], env={})
    assert r.configuration == {**IMAGE, "customizations": {"vscode": {
        "extensions": ["c.d", "a.b"], "settings": {"x": 1, "y": 2}, "devPort": 8000}}}
    assert len(r.warnings) == 3


def test_a_top_level_value_that_is_not_an_object(write_config: WriteConfig) -> None:
    path = write_config('["image"]')
    with pytest.raises(InvalidConfiguration) as info:
        read_config(path.parents[1], env={})
    assert info.value.details["pointer"] == ""



def test_parse_config_checks_inline_text() -> None:
    assert parse_config('// inline\n{"image": "debian", "name": "${localEnv:X}",}') == {
        "image": "debian", "name": "${localEnv:X}"}
    with pytest.raises(InvalidConfiguration) as info:
        parse_config('{"image": "debian",\n "init": "yes"}', source="environment e1 (inline)")
    assert info.value.message.startswith("environment e1 (inline):2:10: /init: expected true or false")
    with pytest.raises(InvalidConfiguration) as info:
        parse_config("{'image': 'debian'}", source="inline")
    assert info.value.details == {"file": "inline", "line": 1, "column": 2}


def test_without_the_schema_a_config_reads_the_same_and_only_the_schema_refuses(write_config: WriteConfig) -> None:
    good = write_config({**IMAGE, "remoteUser": "dev", "workspaceFolder": "/w/${localWorkspaceFolderBasename}"})
    folder = good.parent.parent
    assert read_config(folder, validate=False) == read_config(folder)
    write_config({"image": 5})
    assert read_config(folder, validate=False).configuration == {"image": 5}
    with pytest.raises(InvalidConfiguration, match="/image"):
        read_config(folder)
    good.write_text("{")  # not the schema's: still refused
    with pytest.raises(InvalidConfiguration):
        read_config(folder, validate=False)
