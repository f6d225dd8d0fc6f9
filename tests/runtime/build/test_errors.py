"""Bad input gets one clear line (file:line, what, a hint); a build killed with -9 leaves no partial
image or layer in sight, and the next build goes on from the cache."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.runtime.build.conftest import Builds

CASES = [
    ("FROM flextest/minbase:1\nRUN echo \\\n  ok\nCOPY ../outside /x\n", 7,
     "Dockerfile:4: COPY source '../outside' is outside the build context"),
    ("ARG BASE\nFROM $BASE\n", 7, "Dockerfile:2: FROM '$BASE' expands to an empty image name"),
    ("FROM flextest/minbase:1\nCOPY missing.txt /x\n", 3,
     "Dockerfile:2: COPY source 'missing.txt' not found in the build context"),
    ("FROM flextest/minbase:1\nRUN <<EOF\necho never closed\n", 7, "Dockerfile:2: heredoc <<EOF is never closed"),
    ("FROM flextest/minbase:1\nENV\n", 7, "Dockerfile:2: ENV needs arguments"),
    ("FROM flextest/minbase:1 AS a\nFROM flextest/minbase:1 AS A\n", 7, "Dockerfile:2: stage name 'a' is used twice"),
    ("FROM --platform=linux/s390x flextest/minbase:1\n", 7, "Dockerfile:1: --platform=linux/s390x: this host builds"),
    ("RUN true\nFROM flextest/minbase:1\n", 7, "Dockerfile:1: RUN before the first FROM"),
]


@pytest.mark.parametrize("dockerfile,code,message", CASES)
def test_one_line(root_builds: Builds, dockerfile: str, code: int, message: str) -> None:
    ctx = root_builds.context("err", {"Dockerfile": dockerfile})
    r = root_builds.build(ctx)
    assert r.code == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\nerror:") + r.stderr.startswith("error:") == 1


def test_unknown_target(root_builds: Builds) -> None:
    ctx = root_builds.context("target", {"Dockerfile": "FROM flextest/minbase:1 AS one\n"})
    r = root_builds.build(ctx, "--target", "two")
    assert r.code == 3 and "target stage 'two' not found in the Dockerfile" in r.stderr and "one" in r.stderr


def test_kill_during_run_leaves_nothing_and_resumes(builds: Builds) -> None:
    b = builds
    df = "FROM flextest/minbase:1\nRUN echo one > /one\nRUN echo started; sleep 300\n"
    ctx = b.context("killed", {"Dockerfile": df})
    argv = b.mode.python_argv("-m", "flex", "image", "build", "-t", "killed:1", str(ctx))
    proc = subprocess.Popen(argv, env=b.mode.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd="/")
    assert proc.stderr is not None
    deadline = time.monotonic() + 240
    for line in proc.stderr:
        if line.strip() == "started" or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()  # (closes the pipes)
    assert "killed" not in b.ok("image", "ls")
    (ctx / "Dockerfile").write_text("FROM flextest/minbase:1\nRUN echo one > /one\nRUN echo two > /two\n")
    r = b.build(ctx, "-t", "killed:1")
    assert r.code == 0, r.stderr
    assert "Dockerfile:2: RUN (cached)" in r.stderr
    assert b.ok("runtime", "ps", "-a", "-q").strip() == ""  # the killed step's container is gone
    assert b.ok("runtime", "run", "--rm", "--net", "none", "killed:1", "cat", "/one", "/two") == "one\ntwo\n"
