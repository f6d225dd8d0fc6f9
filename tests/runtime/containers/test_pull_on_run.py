"""`flex runtime run` of an image this machine does not have pulls it first, as `docker run` and
`podman run` do, root and rootless, from the real docker-registry; the pull's progress goes to stderr
and stdout stays the container's."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import debian_rootfs_tar
from tests.runtime.images.conftest import RegistryServer, start_registry, stop

from .conftest import Mode

pytestmark = pytest.mark.registry

_PUSH = ("import sys; from pathlib import Path; from flex.runtime.base.home import Home; "
         "from flex.runtime.images.store import ImageStore; from flex.runtime.transfer.bootstrap import "
         "image_from_rootfs_tar; from flex.runtime.transfer.push import push; store = ImageStore(Home.open()); "
         "image_from_rootfs_tar(store, Path(sys.argv[1]), 'flextest/src:1'); "
         "push(store, 'flextest/src:1', sys.argv[2])")


@pytest.fixture(scope="module")
def pushed(workdir: Path) -> Iterator[tuple[RegistryServer, str]]:
    """A registry holding Debian minbase as flextest/minbase:1, pushed from a FLEX_HOME of its own."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        reg = start_registry(Path(tmp) / "registry")
        try:
            ref = f"{reg.host}/flextest/minbase:1"
            env = {**os.environ, "FLEX_HOME": str(Path(tmp) / "pusher")}
            proc = subprocess.run([sys.executable, "-c", _PUSH, str(debian_rootfs_tar()), ref], env=env,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr
            yield reg, ref
        finally:
            stop(reg.proc)


def test_run_pulls_a_missing_image(mode: Mode, pushed: tuple[RegistryServer, str]) -> None:
    reg, ref = pushed
    # a fresh start when this mode's (session-wide) store already has it from an earlier run
    subprocess.run(mode.python_argv("-m", "flex", "image", "rm", ref), env=mode.env(), capture_output=True,
                   cwd="/", check=False)
    r = mode.run("run", "--rm", ref, "cat", "/etc/debian_version")
    assert r.code == 0, r.stderr
    assert r.stdout.strip().split(".")[0].isdigit(), r.stdout  # the container's output, and only that
    assert f"image {ref} is not here: pulling it" in r.stderr and f"pulled {ref}" in r.stderr, r.stderr
    again = mode.run("run", "--rm", ref, "true")
    assert again.code == 0 and "pulling" not in again.stderr, again.stderr
    missing = mode.run("run", "--rm", f"{reg.host}/flextest/nope:1", "true")
    assert missing.code == 3 and "not found" in missing.stderr and "Traceback" not in missing.stderr
