"""`flex runner join` and `flex runner status` as a person runs them: a real server, the credential file."""

from __future__ import annotations

import json
import stat
import time

import pytest

from tests.runner.conftest import Runner, Server

pytestmark = pytest.mark.userns


def test_join_writes_a_private_credential_and_status_reports(server: Server, runner: Runner) -> None:
    runner_id = runner.join(server, "--label", "zone=test", "--kind", "vm")
    cred_file = runner.mode.home / "runner" / "credential.json"
    assert stat.S_IMODE(cred_file.stat().st_mode) == 0o600
    cred = json.loads(cred_file.read_text())
    assert cred["runner_id"] == runner_id and cred["credential"] and cred["url"] == server.url
    seen = server.admin.get_runner(runner_id)
    assert seen.labels == {"zone": "test"} and seen.kind == "vm" and seen.capacity.cpus >= 1
    assert seen.capacity.memory > 2**28 and seen.capacity.disk > 2**30  # the machine's own figures
    # rootless, every container shares the user's one range: no separate ranges for the scheduler to count on
    assert seen.rootless is runner.mode.rootless
    assert (seen.id_ranges == 0) if runner.mode.rootless else seen.id_ranges > 1000
    r = runner.cli("runner", "status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["running"] is False
    # joining twice is refused, saying how to join again
    again = runner.cli("runner", "join", server.url, "--token", server.join_token())
    assert again.returncode == 4 and again.stderr.startswith("error: this machine already joined")
    assert "Traceback" not in again.stderr


def test_a_bad_join_token_is_one_line(server: Server, runner: Runner) -> None:
    r = runner.cli("runner", "join", server.url, "--token", "nope", "--name", "r2")
    assert r.returncode == 5, r.stderr
    assert r.stderr.startswith("error: this join token is invalid") and "Traceback" not in r.stderr
    assert not (runner.mode.home / "runner" / "credential.json").exists()
    r = runner.cli("runner", "run")
    assert r.returncode == 3 and "flex runner join" in r.stderr


def test_a_runner_low_on_free_disk_reports_disk_pressure_and_gets_no_new_environments(
        server: Server, runner: Runner) -> None:
    runner_id = runner.join(server, "--kind", "vm")
    # a threshold above the disk's whole size: this machine is "low on disk" as far as the runner can tell
    runner.start(None, "--min-free-disk", "1000000Ti")
    deadline = time.monotonic() + 60
    while not server.admin.get_runner(runner_id).disk_pressure:
        assert time.monotonic() < deadline, runner.text()[-3000:]
        time.sleep(0.2)
    server.admin.create_environment("full", {"source": {"git": "git://127.0.0.1:9/none.git"}})
    env = server.admin.get_environment("full")
    scheduled = env.status.condition("Scheduled")
    assert env.status.runner_id is None and scheduled is not None
    assert (scheduled.status, scheduled.reason) == ("False", "DiskPressure") and "r1" in scheduled.message
    status = json.loads(runner.cli("runner", "status", "--json").stdout)
    assert status["diskPressure"] is True and status["diskFree"] > 0
    assert "DiskPressure" in runner.text()

    # with room again (the shipped threshold) the same runner takes it
    runner.stop()
    runner.start()
    while server.admin.get_environment("full").status.runner_id != runner_id:
        assert time.monotonic() < deadline + 60, runner.text()[-3000:]
        time.sleep(0.2)
    assert server.admin.get_runner(runner_id).disk_pressure is False
