"""CVE-2022-0492 (cgroup v1 release_agent): the kernel is asked, and `--docker` is refused with one line
naming the CVE when it lacks the fix. This VM's kernel has it; an unfixed kernel is the one failure a test
cannot produce here, so that case fakes the probe's answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flex.errors import FailedPrecondition
from flex.runtime.cgroups import cgroups, release_agent

pytestmark = pytest.mark.skipif(cgroups.is_v2() or not Path("/sys/fs/cgroup").is_dir(),
                                reason="cgroup v2 has no release_agent")


def test_this_kernel_refuses_the_write_in_a_user_namespace() -> None:
    before = {p: p.read_text() for p in Path("/sys/fs/cgroup").glob("*/release_agent")}
    assert release_agent.probe() == release_agent.FIXED
    assert {p: p.read_text() for p in before} == before, "the probe changed no release_agent"
    release_agent.require_fix()


def test_the_probe_answers_for_an_unprivileged_user_too() -> None:
    if os.geteuid() != 0:
        assert release_agent.probe() == release_agent.FIXED
        return
    import subprocess

    r = subprocess.run(["runuser", "-u", "flextest", "--", "env", f"PYTHONPATH={Path(__file__).parents[3]}",
                        "/usr/bin/python3", "-c",  # the venv's interpreter is under /root here
                        "from flex.runtime.cgroups import release_agent as r; print(r.probe())"],
                       capture_output=True, text=True, cwd="/", timeout=60)
    if r.returncode != 0 and "No module named" in r.stderr:
        pytest.skip("flextest cannot import flex's dependencies with this interpreter")
    assert r.stdout.strip() == release_agent.FIXED, r.stderr


@pytest.mark.parametrize(("answer", "says"), [
    (release_agent.VULNERABLE, "lacks the fix for CVE-2022-0492"),
    ("no user namespace could be made to check it in", "cannot tell whether this kernel has the fix"),
])
def test_docker_is_refused_without_the_fix(monkeypatch: pytest.MonkeyPatch, answer: str, says: str) -> None:
    monkeypatch.setattr(release_agent, "probe", lambda: answer)
    with pytest.raises(FailedPrecondition) as err:
        release_agent.require_fix()
    assert says in err.value.message and "\n" not in err.value.message
    assert err.value.hint
