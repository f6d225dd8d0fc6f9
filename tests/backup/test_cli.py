"""`flex backup …` and `flex restore` as a user runs them: the real command line in a subprocess."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.conftest import run_flex


def test_create_ls_verify_restore_forget_rm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"FLEX_HOME": str(home)}
    src = tmp_path / "workspace"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "main.py").write_text("print('hi')\n")

    r = run_flex("backup", "create", "web", "--path", str(src), env=env)
    assert r.code == 0, r.stderr
    assert "1 new" in r.stdout
    key = home / "backup.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text().strip()
    (src / "pkg" / "main.py").write_text("print('changed')\n")
    r = run_flex("backup", "create", "web", "--path", str(src), env=env)
    assert r.code == 0 and "1 changed" in r.stdout, r.stdout
    assert run_flex("backup", "create", "api", "--path", str(src), env=env).code == 0

    r = run_flex("backup", "ls", "web", "--json", env=env)
    snaps = json.loads(r.stdout)
    assert [s["tags"] for s in snaps] == [["env:web"], ["env:web"]]
    table = run_flex("backup", "ls", env=env).stdout
    assert "web" in table and "api" in table

    r = run_flex("backup", "verify", "--read-data", env=env)
    assert r.code == 0 and r.stdout.startswith("ok: 3 backups"), r.stdout + r.stderr

    out = tmp_path / "out"
    r = run_flex("restore", snaps[0]["short_id"], "--target", str(out), env=env)
    assert r.code == 0, r.stderr
    assert (out / "workspace" / "pkg" / "main.py").read_text() == "print('hi')\n"
    r = run_flex("restore", snaps[0]["short_id"], "--target", str(out), env=env)
    assert r.code == 4 and r.stderr.startswith("error: ") and "exists" in r.stderr and "Traceback" not in r.stderr

    r = run_flex("backup", "forget", "--keep-last", "1", env=env)
    assert r.code == 0 and "kept 2, removed 1" in r.stdout, r.stdout + r.stderr
    r = run_flex("backup", "rm", snaps[1]["short_id"], env=env)
    assert r.code == 0, r.stderr
    assert json.loads(run_flex("backup", "ls", "web", "--json", env=env).stdout) == []
    assert run_flex("backup", "verify", env=env).code == 0


def test_wrong_password_and_missing_backup_are_one_line_errors(tmp_path: Path) -> None:
    env = {"FLEX_HOME": str(tmp_path / "home")}
    src = tmp_path / "s"
    src.mkdir()
    assert run_flex("backup", "create", "x", "--path", str(src), env=env).code == 0
    r = run_flex("backup", "ls", env={**env, "FLEX_BACKUP_PASSWORD": "wrong"})
    assert r.code == 5 and "wrong password" in r.stderr and "Traceback" not in r.stderr
    r = run_flex("restore", "deadbeef", "--target", str(tmp_path / "o"), env=env)
    assert r.code == 3 and "does not exist" in r.stderr and "hint: " in r.stderr
    assert not os.path.exists(tmp_path / "o")
