"""Fixtures for container tests: real crun, real user namespaces, as root and as the user `flextest`.

Images: until `flex image bootstrap` and its image store are in the tree, images are root filesystem
directories extracted from the cached mmdebstrap tars (tests/conftest.py): unshifted for root (layers are
idmapped per container), shifted into flextest's subuid range for rootless (extracted inside its user
namespace). Every test gets a fresh FLEX_HOME and leaves no container, mount, cgroup or id range behind,
even when it fails.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, Result, debian_rootfs_tar, missing, remove_later

USER = "flextest"

# io_uring_setup(1, &params) with zeroed params, through perl's syscall() (perl-base is in every Debian
# image): prints the result and errno. 425 on x86_64 and aarch64 alike (syscall numbers are unified from 403)
IO_URING_SETUP = "$p = \"\\0\" x 120; $r = syscall(425, 1, $p); print $r, ' ', $! + 0, \"\\n\""


def _have_runtime() -> str | None:
    if os.geteuid() != 0:
        return "container tests run as root (they also act as the unprivileged user flextest)"
    if not shutil.which("crun"):
        return "crun is not installed (installer/install.sh)"
    return None


@dataclass
class Mode:
    """How to run `flex runtime ...`: as root, or as flextest with its own FLEX_HOME."""

    name: str  # "root" | "rootless"
    home: Path
    python: list[str]

    @property
    def rootless(self) -> bool:
        return self.name == "rootless"

    def argv(self, *args: str) -> list[str]:
        if (args and args[0] in ("run", "create") and not any(a.startswith("--net") for a in args)
                and "--docker" not in args):
            # these tests are about containers; networking has its own (test_network.py). Nested Docker
            # runs as the runner runs it: with the default network (dockerd and `docker pull` need one)
            args = (args[0], "--net", "none", *args[1:])
        return self.python_argv("-m", "flex", "runtime", *args)

    def python_argv(self, *args: str) -> list[str]:
        """Python with these arguments, as this mode's user (FLEX_HOME set)."""
        base = [*self.python, *args]
        if self.rootless:
            return ["runuser", "-u", USER, "--", "env", f"FLEX_HOME={self.home}",
                    f"PYTHONPATH={REPO}:{sysconfig.get_paths()['purelib']}", *base]
        return base

    def env(self) -> dict[str, str]:
        # the checkout first, so `python -m tests...` helpers import from it whatever the cwd
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "FLEX_HOME": str(self.home), "PYTHONPATH": path}
        env.pop("FLEX_DEBUG", None)
        return env

    def run(self, *args: str, timeout: float = 120, input: str | None = None) -> Result:
        proc = subprocess.run(self.argv(*args), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, input=input, cwd="/")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, timeout: float = 120) -> str:
        r = self.run(*args, timeout=timeout)
        assert r.code == 0, f"flex runtime {' '.join(args)} -> {r.code}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def host_uid(self) -> int:
        return pwd.getpwnam(USER).pw_uid if self.rootless else 0


def _python_for_user() -> list[str]:
    """The venv's interpreter when flextest may execute it; else the system python3 with the venv's
    site-packages on PYTHONPATH (same CPython minor version; on this VM the venv's python is in /root)."""
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    probe = subprocess.run(["runuser", "-u", USER, "--", sys.executable, "-c", "import typer"],
                           capture_output=True, cwd="/", env=env)
    if probe.returncode == 0:
        return [sys.executable]
    want = repr(tuple(sys.version_info[:2]))
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        p = subprocess.run(["runuser", "-u", USER, "--", cand, "-c",
                            f"import sys, typer; sys.exit(tuple(sys.version_info[:2]) != {want})"],
                           capture_output=True, cwd="/", env=env)
        if p.returncode == 0:
            return [cand]
    missing("no python interpreter with flex's dependencies that the user flextest may run")


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A scratch directory that both root and flextest can reach (pytest's tmp dirs are 0700 root)."""
    reason = _have_runtime()
    if reason:
        missing(reason)
    d = Path(tempfile.mkdtemp(prefix="flex-ctr-tests-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    remove_later(d)


def _extract(tar: Path, dest: Path, rootless: bool) -> Path:
    rootfs = dest / "rootfs"
    rootfs.mkdir(parents=True)
    if not rootless:
        subprocess.run(["tar", "-C", str(rootfs), "--exclude=./dev/*", "-xf", str(tar)], check=True)
        return dest
    subprocess.run(["chown", "-R", USER, str(dest)], check=True)
    start = _subid_start()
    subprocess.run(["runuser", "-u", USER, "--", "unshare", "--map-root-user", f"--map-users={start},1,65536",
                    f"--map-groups={start},1,65536", "tar", "-C", str(rootfs), "--exclude=./dev/*", "-xf",
                    str(tar)], check=True, cwd="/")
    return dest


def _subid_start() -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, _count = line.split(":")
        if name == USER:
            return int(start)
    missing("flextest has no /etc/subuid range")


@pytest.fixture(scope="session")
def images(workdir: Path) -> dict[str, str]:
    """(mode, kind, packages) -> image (a name in the mode's image store, or a directory)."""
    return {}


def dir_image_for(images: dict[str, str], workdir: Path, mode: str, include: tuple[str, ...] = ()) -> str:
    """A root filesystem directory image (for tests that build derived images from its files)."""
    key = f"dir:{mode}:{','.join(include)}"
    if key not in images:
        tar = debian_rootfs_tar(include=include)
        dest = workdir / "images" / key.replace(":", "-").replace(",", "_")
        images[key] = str(_extract(tar, dest, mode == "rootless"))
    return images[key]


def image_for(images: dict[str, str], workdir: Path, mode: Mode, include: tuple[str, ...] = ()) -> str:
    """An image made the way `flex image bootstrap` makes it (its image_from_rootfs_tar, on the cached
    mmdebstrap tar rather than a fresh mmdebstrap run), in the mode's image store: unshifted as root,
    shifted into flextest's range (in its user namespace) rootless."""
    key = f"store:{mode.name}:{','.join(include)}"
    if key in images:
        return images[key]
    if importlib.util.find_spec("flex.runtime.transfer.bootstrap") is None:
        images[key] = dir_image_for(images, workdir, mode.name, include)
        return images[key]
    tar = debian_rootfs_tar(include=include)
    name = "flextest/" + ("-".join(p.split(".")[0] for p in include) or "minbase") + ":1"
    images[key] = image_from_tar(mode, tar, name)
    return images[key]


def image_from_tar(mode: Mode, tar: Path, name: str) -> str:
    """The root filesystem ``tar`` as a one-layer image ``name`` in the mode's image store: the image
    `flex image bootstrap` makes of it (image_from_rootfs_tar), imported from an OCI archive of it that is made
    once and cached next to the tar (its gzip pass costs ~10-60 s a call on a loaded machine), as
    `flex image import` imports one: shifted into flextest's range (in its user namespace) rootless."""
    code = ("import sys; from pathlib import Path; from flex.runtime.base.home import Home; "
            "from flex.runtime.images.store import ImageStore; from flex.runtime.unpack.userns import store_ownership; "
            "from flex.runtime.transfer.archive import import_image; "
            "img = import_image(ImageStore(Home.open(), ownership=store_ownership()), Path(sys.argv[1]), "
            "sys.argv[2]); print(img.name)")
    proc = subprocess.run(mode.python_argv("-c", code, str(bootstrapped_archive(tar)), name), env=mode.env(),
                          capture_output=True, text=True, timeout=900, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


_BOOTSTRAP = ("import sys; from pathlib import Path; from flex.runtime.base.home import Home; "
              "from flex.runtime.images.store import ImageStore; "
              "from flex.runtime.unpack.userns import store_ownership; "
              "from flex.runtime.transfer.bootstrap import image_from_rootfs_tar; "
              "from flex.runtime.transfer.archive import export_image; "
              "store = ImageStore(Home.open(), ownership=store_ownership()); "
              "img = image_from_rootfs_tar(store, Path(sys.argv[1]), 'flextest/bootstrap:1'); "
              "export_image(store, img.name, Path(sys.argv[2]))")


def bootstrapped_archive(tar: Path) -> Path:
    """An OCI archive of what image_from_rootfs_tar makes of ``tar``, made once (per version of the code that
    makes it) and cached beside it, readable by flextest as the tar is."""
    code = b"".join((REPO / "flex" / "runtime" / rel).read_bytes()
                    for rel in ("transfer/bootstrap.py", "transfer/archive.py"))
    key = hashlib.sha256(tar.name.encode() + code).hexdigest()[:12]
    out = tar.with_name(f"image-{tar.stem}-{key}.oci.tar")
    with open(tar.with_name(f".{out.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other test processes wait instead of making it twice
        if out.exists():
            return out
        home = Path(tempfile.mkdtemp(prefix="bootstrap-", dir="/var/tmp"))
        try:
            env = {**os.environ, "FLEX_HOME": str(home), "PYTHONPATH": str(REPO)}
            proc = subprocess.run([sys.executable, "-c", _BOOTSTRAP, str(tar), str(out)], env=env,
                                  capture_output=True, text=True, timeout=900, cwd="/")
            assert proc.returncode == 0, proc.stderr
        finally:
            shutil.rmtree(home, ignore_errors=True)
        out.chmod(0o644)
    return out


@pytest.fixture
def image(mode: Mode, images: dict[str, str], workdir: Path) -> str:
    return image_for(images, workdir, mode)


@pytest.fixture
def image_dir(mode: Mode, images: dict[str, str], workdir: Path) -> str:
    return dir_image_for(images, workdir, mode.name)


@pytest.fixture(scope="session")
def delegated() -> None:
    """flextest's cgroup subtree (cgroup v1), what `flex runtime delegate-cgroups` gives a user."""
    r = subprocess.run([sys.executable, "-m", "flex", "runtime", "delegate-cgroups", USER], capture_output=True,
                       text=True, env={**os.environ, "FLEX_HOME": "/var/tmp/flex-delegate-probe"})
    shutil.rmtree("/var/tmp/flex-delegate-probe", ignore_errors=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")
def homes(workdir: Path) -> Iterator[dict[str, Mode]]:
    """One FLEX_HOME per mode for the session (its image store is shared by the tests); every test
    leaves it without containers (``cleanup``)."""
    made: dict[str, Mode] = {}
    yield made
    for m in made.values():
        if _has_containers(m):  # else every test's own cleanup() has run: its CLI calls again would find nothing
            cleanup(m)
        _stop_keeper(m)  # the homes go with the workdir


@pytest.fixture(params=["root", "rootless"])
def mode(request: pytest.FixtureRequest, workdir: Path, delegated: None, homes: dict[str, Mode]) -> Iterator[Mode]:
    name = request.param
    if name not in homes:
        if name == "rootless":
            try:
                pwd.getpwnam(USER)
            except KeyError:
                missing("test user flextest missing: run installer/install.sh --dev as root")
            python = _python_for_user()
        else:
            python = [sys.executable]
        home = Path(tempfile.mkdtemp(prefix=f"home-{name}-", dir=workdir))
        if name == "rootless":
            subprocess.run(["chown", f"{USER}:{USER}", str(home)], check=True)  # as a user has their home
        homes[name] = Mode(name=name, home=home, python=python)
    m = homes[name]
    try:
        yield m
    finally:
        cleanup(m)


# What `flex runtime ps -a -q`, `rm -f` of each, then `gc` do, in one process (three cost ~1 s a test). As those
# calls were, a failing removal is not fatal here: what it leaves is what cleanup() then reports.
_REMOVE_ALL = """
import sys
from flex.runtime.base.home import Home
from flex.runtime.containers.store import Containers
store = Containers(Home.open())
for c in store.all():
    try:
        store.remove(c.id, force=True)
    except Exception as err:
        print(f"rm -f {c.id}: {err}", file=sys.stderr)
try:
    list(store.gc())
except Exception as err:
    print(f"gc: {err}", file=sys.stderr)
"""


def cleanup(m: Mode) -> None:
    """Remove every container of the test, then check nothing is left: mounts, bundles, OCI state."""
    proc = subprocess.run(m.python_argv("-c", _REMOVE_ALL), env=m.env(), capture_output=True, text=True,
                          timeout=120, cwd="/")
    _stop_keeper(m)
    assert proc.returncode == 0, f"removing the test's containers failed:\n{proc.stderr[-4000:]}"
    leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if str(m.home / "containers") in line]
    for line in leftovers:
        subprocess.run(["umount", "-l", line.split()[4]], check=False)
    bundles = list((m.home / "containers").iterdir()) if (m.home / "containers").exists() else []
    for b in bundles:
        shutil.rmtree(b, ignore_errors=True)
    assert not leftovers, f"mounts left behind: {leftovers}"
    assert not bundles, f"container directories left behind: {bundles}"


def _has_containers(m: Mode) -> bool:
    """A container left in the mode's FLEX_HOME (a test interrupted before its cleanup): a bundle or a mount."""
    bundles = m.home / "containers"
    return (bundles.exists() and any(bundles.iterdir())) or str(bundles) in Path("/proc/self/mountinfo").read_text()


def _stop_keeper(m: Mode) -> None:
    """The rootless user namespace keeper holds the mode's id mapping open; it goes with its FLEX_HOME."""
    pid_file = m.home / "run" / "userns.pid"
    if m.rootless and pid_file.exists():
        subprocess.run(["kill", "-9", pid_file.read_text().strip()], check=False)


def cgroup_dirs_of(rel: str) -> list[Path]:
    """The directories of cgroup ``rel`` (as `inspect` reports it) that exist, in any hierarchy."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root / rel.strip("/")] if (root / rel.strip("/")).is_dir() else []
    return [h / rel.strip("/") for h in root.iterdir() if (h / rel.strip("/")).is_dir()]
