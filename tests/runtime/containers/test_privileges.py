"""Privileges the way devcontainer images use them: a non-root image user with passwordless sudo
(`remoteUser: dev`, `postCreateCommand: sudo apt-get ...`), root and rootless, with the shipped defaults.
No no-new-privileges unless asked for (`--security-opt no-new-privileges`), as in Docker and podman."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.conftest import debian_rootfs_tar
from tests.runtime.containers.conftest import Mode, image_from_tar

pytestmark = pytest.mark.userns

_ADD = {  # what `useradd -m -u 1000 dev` and a devcontainer's sudoers.d entry leave in the image
    "etc/passwd": b"dev:x:1000:1000::/home/dev:/bin/sh\n",
    "etc/group": b"dev:x:1000:\n",
    "etc/shadow": b"dev:!:19000:0:99999:7:::\n",
}


def _with_sudo_user(src: Path, dest: Path) -> None:
    """``src`` (Debian with sudo) plus the user dev (uid 1000) and ``dev ALL=(ALL) NOPASSWD:ALL``."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for member in tin:
            data = tin.extractfile(member) if member.isreg() else None
            name = member.name.removeprefix("./")
            if data is not None and name in _ADD:
                body = data.read() + _ADD[name]
                member.size = len(body)
                tout.addfile(member, io.BytesIO(body))
            else:
                tout.addfile(member, data)
        sudoers = b"dev ALL=(ALL) NOPASSWD:ALL\n"
        info = tarfile.TarInfo("./etc/sudoers.d/dev")
        info.size, info.mode = len(sudoers), 0o440
        tout.addfile(info, io.BytesIO(sudoers))
        home = tarfile.TarInfo("./home/dev")
        home.type, home.mode, home.uid, home.gid = tarfile.DIRTYPE, 0o755, 1000, 1000
        tout.addfile(home)


@pytest.fixture
def sudo_image(mode: Mode, images: dict[str, str], workdir: Path) -> str:
    key = f"sudo:{mode.name}"
    if key not in images:
        tar = workdir / "sudo-user.tar"
        if not tar.exists():
            _with_sudo_user(debian_rootfs_tar(include=("sudo",)), tar)
            tar.chmod(0o644)
        images[key] = image_from_tar(mode, tar, "flextest/sudo-user:1")
    return images[key]


def test_sudo_works_for_a_non_root_image_user(mode: Mode, sudo_image: str) -> None:
    out = mode.ok("run", "--rm", "--user", "dev", sudo_image, "sh", "-c",
                  "id -u; grep NoNewPrivs /proc/self/status; sudo -n true && sudo -n id -u")
    uid, _, nnp, root = out.split()
    assert (uid, nnp, root) == ("1000", "0", "0")


def test_no_new_privileges_when_asked(mode: Mode, sudo_image: str) -> None:
    r = mode.run("run", "--rm", "--user", "dev", "--security-opt", "no-new-privileges", sudo_image, "sh", "-c",
                 "grep NoNewPrivs /proc/self/status; sudo -n true")
    assert r.code != 0 and r.stdout.split() == ["NoNewPrivs:", "1"], r.stdout + r.stderr
    out = mode.ok("run", "--rm", "--security-opt", "no-new-privileges:false", sudo_image, "grep", "NoNewPrivs",
                  "/proc/self/status")
    assert out.split() == ["NoNewPrivs:", "0"]


def test_unknown_security_opt_is_one_clear_line(mode: Mode, sudo_image: str) -> None:
    r = mode.run("run", "--rm", "--security-opt", "apparmor=foo", sudo_image, "true")
    assert r.code == 7 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0] == "error: --security-opt 'apparmor=foo': not an option flex knows"
