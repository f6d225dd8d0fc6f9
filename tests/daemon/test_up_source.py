"""What `flex up` asks the control plane for, from a folder or a git URL (flex/cli/up_source.py): real folders
and a real git repository, no daemon."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flex.cli.up_source import desired
from flex.errors import FailedPrecondition, UsageError


def _folder(tmp_path: Path, name: str = "My_Project") -> Path:
    folder = tmp_path / name
    (folder / ".devcontainer").mkdir(parents=True)
    (folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps({"build": {"dockerfile": "Dockerfile"}}))
    (folder / ".devcontainer" / "Dockerfile").write_text("FROM debian\n")
    (folder / "main.py").write_text("print('hi')\n")
    return folder


def test_a_local_folder_is_a_path_source_with_a_stable_name_and_a_digest_of_the_devcontainer_files(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    want = desired(str(folder), None, None, remote=False)
    assert want.name == "my-project"
    assert want.spec["source"] == {"path": str(folder)} and "devcontainer" not in want.spec
    digest = want.spec["configHash"]
    assert desired(None, str(folder), None, remote=False).spec["configHash"] == digest  # --workspace-folder
    (folder / "main.py").write_text("print('edited')\n")  # the code is not the container
    assert desired(str(folder), None, None, remote=False).spec["configHash"] == digest
    (folder / ".devcontainer" / "Dockerfile").write_text("FROM debian\nRUN true\n")  # a one-line Dockerfile edit
    assert desired(str(folder), None, None, remote=False).spec["configHash"] != digest
    assert desired(str(folder), None, None, remote=False, name="other").name == "other"


def test_a_git_url_is_a_git_source_named_after_the_repository(tmp_path: Path) -> None:
    want = desired("https://example.invalid/org/Web-App.git", None, ".devcontainer/x/devcontainer.json",
                   remote=True, ref="dev")
    assert want.name == "web-app" and want.folder is None
    assert want.spec["source"] == {"git": "https://example.invalid/org/Web-App.git", "ref": "dev"}
    assert want.spec["devcontainer"] == {"path": ".devcontainer/x/devcontainer.json"}
    with pytest.raises(UsageError):
        desired(str(_folder(tmp_path)), None, None, remote=False, ref="main")  # --ref goes with a git URL


def test_for_a_remote_control_plane_a_folder_comes_from_its_git_origin(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "app")
    with pytest.raises(FailedPrecondition) as info:
        desired(str(folder), None, None, remote=True)
    assert "runners cannot see it" in info.value.message and "flex up GIT_URL" in (info.value.hint or "")
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for args in (["init", "-q", "-b", "feature"], ["remote", "add", "origin", "https://example.invalid/app.git"]):
        subprocess.run(["git", *args], cwd=folder, env=env, check=True)
    want = desired(str(folder), None, None, remote=True)
    assert want.spec["source"] == {"git": "https://example.invalid/app.git", "ref": "feature"}
