"""Fixtures shared by every test directory: running the CLI, and cached Debian root filesystems.

Real components only (see ../shared/notes/this-machine.md). Root filesystems come from mmdebstrap with
the host's apt configuration, built once and cached under FLEX_TEST_CACHE (default .cache/test) so that
every later run, and every test directory, reuses them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("FLEX_TEST_CACHE", REPO / ".cache" / "test"))
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")

# A run started in the background by a non-interactive shell (`.ci/run &`, nohup) ignores SIGINT, and every
# process a test starts would inherit that; tests press Ctrl-C as a terminal does, so Ctrl-C is Ctrl-C here
# (a signal with a handler is reset to its default in the programs this process starts).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Skip reasons that mean "a component the tests need is not here": a skip for those is a failure in CI
# (installer/install.sh --dev must provide every one), whatever raised it (missing(), a skipif marker,
# pytest.importorskip). Skips for what does not apply here (a cgroup v2 branch on a v1 host) stay skips.
_MISSING = re.compile(r"not installed|install\.sh|missing|needs? root|run as root|tests run as root|"
                      r"no python|cannot import|has no range|no /etc/sub|could not import|not available", re.I)


def missing(reason: str) -> NoReturn:
    """A component the test needs is missing: skip on a developer's machine, fail in CI (CI=true)."""
    if IN_CI:
        pytest.fail(f"missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if _MISSING.search(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped for a missing component, which CI does not allow: {reason}"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_flex(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             input: str | None = None, timeout: float = 120) -> Result:
    """Run the real `flex` command line in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("FLEX_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "flex", *args], cwd=cwd, env=full_env, input=input,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def flex() -> type[Result] | object:
    return run_flex


def debian_rootfs_tar(include: Sequence[str] = (), variant: str = "minbase", suite: str = "bookworm") -> Path:
    """A Debian root filesystem as an uncompressed tar, built once with mmdebstrap and cached."""
    if shutil.which("mmdebstrap") is None:
        missing("mmdebstrap is not installed (run installer/install.sh --dev)")
    key = hashlib.sha256(f"{suite}/{variant}/{','.join(sorted(include))}".encode()).hexdigest()[:12]
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"rootfs-{suite}-{variant}-{key}.tar"
    with open(CACHE / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other test processes wait instead of building it twice
        if out.exists():
            return out
        tmp = out.with_suffix(".tmp.tar")
        cmd = ["mmdebstrap", "--quiet", f"--variant={variant}", "--mode=auto", "--format=tar"]
        if include:
            cmd.append(f"--include={','.join(include)}")
        cmd += [suite, str(tmp)]
        subprocess.run(cmd, check=True, timeout=900)
        os.replace(tmp, out)
    return out


def remove_later(path: Path) -> None:
    """Remove the scratch tree ``path`` without waiting: renamed away at once (so the name is free again), then
    deleted by a detached `rm`. Unlinking a few GB of image stores is disk-bound and took a minute at the end of
    a loaded CI run; nothing waits for it. --one-file-system: a mount a failed test left stays untouched."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    # sh returns at once and leaves rm to init: nothing of this process waits on it
    subprocess.run(["setsid", "sh", "-c", 'rm -rf --one-file-system -- "$1" </dev/null >/dev/null 2>&1 &', "sh",
                    str(trash)], check=True, cwd="/")


@pytest.fixture(scope="session")
def minbase_tar() -> Path:
    return debian_rootfs_tar()


@pytest.fixture
def unprivileged_user() -> Iterator[str]:
    """The ordinary user with a subuid range that installer/install.sh --dev creates."""
    import pwd

    try:
        pwd.getpwnam("flextest")
    except KeyError:
        missing("test user 'flextest' missing: run installer/install.sh --dev as root")
    yield "flextest"
