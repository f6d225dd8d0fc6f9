"""`flex up` by a normal user (rootless daemon) of a folder whose devcontainer has a non-root remoteUser (a
`vscode` of uid 1000, the common case): the workspace is that user's inside and what they make there is the
folder owner's outside (issue 14, `--userns keep-id`). Real daemon, build and container."""

from __future__ import annotations

import json

import pytest

from tests.daemon.conftest import Flex

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_up_gives_the_folder_to_a_non_root_remote_user(flex: Flex, image: str) -> None:
    folder = flex.project("kept", {"build": {"dockerfile": "Dockerfile"}, "remoteUser": "vscode"},
                          {".devcontainer/Dockerfile": f"FROM {image}\nRUN useradd -m -u 1000 -U vscode\n",
                           "notes.txt": "mine\n"})
    out = json.loads(flex.ok("up", "--json", cwd=folder).stdout)
    assert out["outcome"] == "success" and out["remoteUser"] == "vscode"
    cid = out["containerId"]
    ws = out["remoteWorkspaceFolder"]
    r = flex.mode.ok("exec", "-u", "vscode", cid, "sh", "-c",
                     f"id -u; stat -c %u:%g {ws}/notes.txt; echo by-vscode > {ws}/made.txt; stat -c %u /etc/passwd")
    assert r.split() == ["1000", "1000:1000", "0"], r
    st, owner = (folder / "made.txt").stat(), folder.stat()
    assert (st.st_uid, st.st_gid) == (owner.st_uid, owner.st_gid) and st.st_uid == flex.mode.host_uid()
    assert (folder / "made.txt").read_text() == "by-vscode\n"
