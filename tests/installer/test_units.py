"""The systemd units the installer writes where systemd is PID 1, rendered the way it renders them, pass
`systemd-analyze verify`; the runner's keeps environments running across its restarts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import missing

UNITS = Path(__file__).resolve().parents[2] / "installer" / "units"


def _render(tmp: Path) -> list[Path]:
    prefix = tmp / "opt"
    (prefix / "venv" / "bin").mkdir(parents=True)
    os.symlink(Path(sys.executable).parent / "flex", prefix / "venv" / "bin" / "flex")
    (prefix / "libexec").mkdir()
    boot = prefix / "libexec" / "flex-boot"
    boot.write_text("#!/bin/sh\nexit 0\n")
    boot.chmod(0o755)
    out = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        for key, value in {"@PREFIX@": str(prefix), "@VENV@": str(prefix / "venv"), "@HOME@": "/var/lib/flex",
                           "@ETC@": "/etc/flex", "@NAME@": unit.stem, "@USER@": "root"}.items():
            text = text.replace(key, value)
        assert not re.findall(r"@[A-Z]+@", text), f"{unit.name}: a placeholder the installer does not fill"
        (tmp / unit.name).write_text(text)
        out.append(tmp / unit.name)
    return out


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        missing("systemd-analyze is not installed (the systemd package; installer/install.sh --dev)")
    units = _render(tmp_path)
    assert {u.name for u in units} == {"flex-server.service", "flex-runner.service", "flex-host.service",
                                       "flex-daemon.service"}
    system = [u for u in units if u.name != "flex-daemon.service"]
    r = subprocess.run(["systemd-analyze", "verify", *map(str, system)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # the desktop daemon is a user unit, run by the person's own systemd (systemd-analyze --user)
    run = tmp_path / "xdg-run"  # the user manager's runtime directory (a login's /run/user/UID)
    run.mkdir(mode=0o700)
    r = subprocess.run(["systemd-analyze", "--user", "verify", str(tmp_path / "flex-daemon.service")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "XDG_RUNTIME_DIR": str(run)})
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_server_unit_runs_as_its_own_user() -> None:
    lines = (UNITS / "flex-server.service").read_text().splitlines()
    assert "User=@USER@" in lines and "Group=@USER@" in lines


@pytest.mark.parametrize("setting", ["Delegate=yes", "KillMode=process", "Restart=always"])
def test_the_runner_unit_leaves_environments_running(setting: str) -> None:
    assert setting in (UNITS / "flex-runner.service").read_text().splitlines()


@pytest.mark.parametrize("setting", ["Delegate=yes", "KillMode=process", "WantedBy=default.target"])
def test_the_daemon_user_unit_leaves_environments_running(setting: str) -> None:
    assert setting in (UNITS / "flex-daemon.service").read_text().splitlines()
