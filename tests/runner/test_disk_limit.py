"""spec.resources.disk enforced on a root runner (a real `flex server`, a real `flex runner run`, real loop
devices): the volume directory is an ext4 image of that size, a write past it gets ENOSPC inside, a larger
limit grows it online, a smaller one is reported and enforced softly, a reboot's lost mount comes back, a
kill -9 around the image converges, and delete leaves no mount, loop device or file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flex.api import Environment
from tests.runner.conftest import GitServer, Runner, Server, cond, crashed, devcontainer, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(120)]


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "LifecycleReady") == ("True", "HooksDone") and \
        env.status.observed_generation == env.metadata.generation


def _mounts_under(path: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(path))]


def _loops_of(img: Path) -> list[str]:
    """Loop devices backed by ``img`` (also by a deleted ``img``: losetup lists it with " (deleted)")."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if str(img) in line]


def _direct_io(img: Path) -> str:
    """The DIO column losetup shows for the loop device of ``img``."""
    [line] = _loops_of(img)
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "DIO", line.split()[0]],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def _can_direct_io(directory: Path) -> bool:
    try:
        os.close(os.open(directory / ".odirect-probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
    except OSError:
        return False
    finally:
        (directory / ".odirect-probe").unlink(missing_ok=True)
    return True


def _message(env: Environment, type_: str) -> str:
    c = env.status.condition(type_)
    return c.message if c is not None else ""


def _sh(runner: Runner, cid: str, script: str) -> tuple[int, str]:
    r = runner.mode.run("exec", cid, "sh", "-c", script)
    return r.code, r.stdout + r.stderr


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_disk_limit_is_enospc_grows_online_survives_a_reboot_and_leaves_nothing(
        server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    home = runner.mode.home
    url = git_server.repo("dl", devcontainer(image))
    runner.join(server, "--kind", "vm")
    runner.start()
    server.admin.create_environment("dl", {"source": {"git": url}, "resources": {"disk": "64Mi"}})
    env = wait_for(server.admin, "dl", _running, runner, timeout=45)
    env_id = env.metadata.id
    img, volume = home / "runner" / "disks" / f"{env_id}.img", home / "runner" / "volumes" / env_id
    assert cond(env, "VolumeReady") == ("True", "DiskImage")
    assert img.stat().st_size == 64 * 2**20 and img.stat().st_blocks * 512 < 16 * 2**20  # sparse
    assert _mounts_under(volume) == [str(volume)] and len(_loops_of(img)) == 1
    # not cached twice (the volume's page cache and the image file's) where the host can do direct I/O
    assert _direct_io(img) == ("1" if _can_direct_io(img.parent) else "0")
    [ctr] = runner.containers(env_id)
    cid = ctr["id"]

    # past the limit: ENOSPC inside; the environment and the runner go on
    code, out = _sh(runner, cid, "dd if=/dev/zero of=/workspaces/dl/big bs=1M count=100 conv=fsync")
    assert code != 0 and "No space left on device" in out, out
    assert runner.exec(cid, "rm /workspaces/dl/big && cat /workspaces/dl/README.md") == "hello from the repository\n"
    assert runner.proc is not None and runner.proc.poll() is None

    # upward: online where the runner has CAP_SYS_RESOURCE (these machines' root lacks it), else once the
    # container stops; the running container keeps running meanwhile
    server.admin.patch_environment("dl", {"spec": {"resources": {"disk": "160Mi"}}})
    env = wait_for(server.admin, "dl", lambda e: cond(e, "VolumeReady") in (("True", "DiskImage"),
                   ("True", "DiskGrowPending")) and e.status.observed_generation == e.metadata.generation,
                   runner, timeout=45)
    assert [c["id"] for c in runner.containers(env_id)] == [cid]
    if cond(env, "VolumeReady") == ("True", "DiskGrowPending"):
        assert "when the environment next stops or starts" in _message(env, "VolumeReady")
    server.admin.stop_environment("dl")
    wait_for(server.admin, "dl", lambda e: e.status.phase == "stopped" and cond(e, "VolumeReady") ==
             ("True", "DiskImage") and "160.0 MiB" in _message(e, "VolumeReady"), runner, timeout=45)
    assert img.stat().st_size == 160 * 2**20 and not img.with_suffix(".grow").exists()

    # a reboot: no mount, no loop device; the next reconcile mounts the image again before the start
    runner.stop()
    subprocess.run(["umount", str(volume)], check=True)
    for line in _loops_of(img):
        subprocess.run(["losetup", "-d", line.split()[0]], check=True)
    assert not (volume / "dl").exists()
    runner.start()
    server.admin.start_environment("dl")
    wait_for(server.admin, "dl", _running, runner, timeout=45)
    assert _mounts_under(volume) == [str(volume)] and len(_loops_of(img)) == 1
    assert _direct_io(img) == ("1" if _can_direct_io(img.parent) else "0")  # after a reboot too
    runner.exec(cid, "dd if=/dev/zero of=/workspaces/dl/big bs=1M count=100 conv=fsync 2>/dev/null")
    assert runner.exec(cid, "stat -c %s /workspaces/dl/big; cat /workspaces/dl/README.md") == \
        f"{100 * 2**20}\nhello from the repository\n"

    # downward: the image keeps its size (ext4 cannot shrink mounted), the condition says so, and the lower
    # limit is the soft one: DiskPressure
    server.admin.patch_environment("dl", {"spec": {"resources": {"disk": "32Mi"}}})
    env = wait_for(server.admin, "dl", lambda e: cond(e, "VolumeReady") == ("True", "DiskNotShrunk") and
                   cond(e, "DiskPressure") == ("True", "OverDiskLimit"), runner, timeout=45)
    assert "cannot shrink" in _message(env, "VolumeReady") and img.stat().st_size == 160 * 2**20
    assert env.status.phase == "running"

    # delete: no mount, no loop device, no image, no volume
    server.admin.delete_environment("dl")
    wait_gone(server.admin, "dl", runner, timeout=45)
    assert _mounts_under(volume) == [] and _loops_of(img) == []
    assert not img.exists() and not volume.exists() and list((home / "runner" / "disks").iterdir()) == []


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_kill_9_around_the_disk_image_converges(server: Server, runner: Runner, git_server: GitServer,
                                                image: str) -> None:
    home = runner.mode.home
    url = git_server.repo("dk", devcontainer(image))
    runner.join(server, "--kind", "vm")
    runner.start(crash_after="disk-image")  # the image made and mounted, nothing else
    server.admin.create_environment("dk", {"source": {"git": url}, "resources": {"disk": "48Mi"}})
    crashed(runner, timeout=60)
    runner.start()
    env = wait_for(server.admin, "dk", _running, runner, timeout=45)
    env_id = env.metadata.id
    img, volume = home / "runner" / "disks" / f"{env_id}.img", home / "runner" / "volumes" / env_id
    assert _mounts_under(volume) == [str(volume)] and len(_loops_of(img)) == 1  # mounted once, not twice
    [ctr] = runner.containers(env_id)
    assert runner.exec(ctr["id"], "df -k /workspaces/dk | tail -1 | awk '{print $2}'").strip().isdigit()

    runner.stop()
    runner.start(crash_after="teardown-disk")  # unmounted and removed, the volume directory not yet
    server.admin.delete_environment("dk")
    crashed(runner, timeout=60)
    assert _mounts_under(volume) == [] and not img.exists() and volume.exists()
    runner.start()
    wait_gone(server.admin, "dk", runner, timeout=45)
    assert _mounts_under(volume) == [] and _loops_of(img) == [] and not volume.exists()
