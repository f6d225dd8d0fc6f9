"""Bad input to `flex up` and friends: one line, a hint in flex's verbs, the documented exit code, and nothing
started or created. No containers here: every case stops before the runner would act."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _flex(tmp_path: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLEX_URL", "FLEX_TOKEN", "FLEX_DEBUG")}
    env.update(FLEX_HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "flex", *args], env=env, capture_output=True, text=True,
                          cwd=cwd or tmp_path, timeout=120)


def _one_error(r: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0], lines[1]


def test_a_folder_without_devcontainer_json_is_exit_7_and_the_hint_offers_the_default_image(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    r = _flex(tmp_path, "up", str(folder))
    assert r.returncode == 7
    err, hint = _one_error(r)
    assert f"no devcontainer.json in {folder}" in err
    assert '{"image": "flex.local/debian:bookworm"}' in hint and "flex image bootstrap" in hint
    assert not (tmp_path / "home" / "daemon").exists()  # nothing started for a mistake found first

    r = _flex(tmp_path, "up", "--json", cwd=folder)
    assert r.returncode == 7
    out = json.loads(r.stdout)
    assert set(out) == {"outcome", "message", "description"} and out["outcome"] == "error"
    assert out["message"] == f"no devcontainer.json in {folder}"


def test_a_devcontainer_json_error_names_file_line_and_column(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    (folder / ".devcontainer").mkdir(parents=True)
    (folder / ".devcontainer" / "devcontainer.json").write_text('{\n  "image": "x",\n  "forwardPorts": "no"\n}\n')
    r = _flex(tmp_path, "up", str(folder))
    assert r.returncode == 7
    assert "devcontainer.json:3:" in r.stderr.splitlines()[0], r.stderr


@pytest.mark.parametrize("args", [("ls", "--server", "host:8080"), ("login", "--server", "host:8080", "--token", "t"),
                                  ("up", "--server", "host:8080")])
def test_a_server_url_without_a_scheme_is_exit_7_everywhere(tmp_path: Path, args: tuple[str, ...]) -> None:
    folder = tmp_path / "app"
    (folder / ".devcontainer").mkdir(parents=True)
    (folder / ".devcontainer" / "devcontainer.json").write_text('{"image": "x"}')
    r = _flex(tmp_path, *args, cwd=folder)
    assert r.returncode == 7, r.stderr
    err, hint = _one_error(r)
    assert "has no http:// or https:// scheme" in err and "http://host:8080" in hint


def test_verbs_without_a_daemon_say_how_to_start_it(tmp_path: Path) -> None:
    for verb in (("ls",), ("show", "app"), ("token", "ls")):
        r = _flex(tmp_path, *verb)
        assert r.returncode == 6, r.stderr
        err, hint = _one_error(r)
        assert "the flex daemon is not running" in err and "`flex daemon start`" in hint
    r = _flex(tmp_path, "daemon", "status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["running"] is False


def test_the_daemon_listens_on_loopback_only(tmp_path: Path) -> None:
    r = _flex(tmp_path, "daemon", "start", "--listen", "0.0.0.0:8765")
    assert r.returncode == 2
    err, hint = _one_error(r)
    assert "loopback only" in err and "flex server" in hint


def test_flex_server_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _flex(tmp_path, "server", "--listen", f"127.0.0.1:{port}")
    assert r.returncode == 6
    err, hint = _one_error(r)
    assert err == f"error: cannot listen on 127.0.0.1:{port}: Address already in use" and "--listen" in hint


def test_validation_errors_say_what_is_expected_not_a_regular_expression(tmp_path: Path) -> None:
    r = _flex(tmp_path, "env", "create", "My App", "--path", "/srv/app", "--server", "http://127.0.0.1:9")
    assert r.returncode == 7, r.stderr  # found before anything is sent
    line = r.stderr.strip().splitlines()[0]
    assert line == ("error: name: 'My App' is not a valid name: lower-case letters, digits and '-', at most 63, "
                    "starting and ending with a letter or digit")
    assert "pattern" not in r.stderr and "^" not in r.stderr


def test_a_user_without_rootless_set_up_is_told_what_to_run(tmp_path: Path) -> None:
    """`nobody` has no subordinate id range: the daemon refuses at start, and `flex daemon start` (what `flex up`
    runs) passes on its one line and the installer command, with nothing left running."""
    import shutil
    import sysconfig

    if os.geteuid() != 0:
        pytest.skip("runs the CLI as the user nobody: needs root")
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="flex-nobody-", dir="/var/tmp"))
    shutil.chown(home, "nobody")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FLEX_HOME": str(home),
           "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
    python = "/usr/bin/python3"  # the venv's interpreter may live where nobody cannot go (/root)
    r = subprocess.run(["runuser", "-u", "nobody", "--", "env", *[f"{k}={v}" for k, v in env.items()], python,
                        "-m", "flex", "daemon", "start"], capture_output=True, text=True, timeout=180, cwd="/")
    assert r.returncode == 1, r.stderr
    err, hint = _one_error(r)
    assert "this user cannot run rootless environments yet" in err and "no subordinate id range" in err
    assert hint == "hint: as root, run: installer/install.sh --user nobody"
    try:
        assert not (home / "daemon" / "state.json").exists() and not (home / "daemon" / "daemon.sock").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)
