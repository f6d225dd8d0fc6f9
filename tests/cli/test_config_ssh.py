"""`flex config-ssh [--remove]`: the managed block goes in once, is replaced in place, and --remove gives
~/.ssh/config back byte for byte, whatever it held. The command itself once, as a user runs it (HOME pointing
at a temp dir); the file shapes through the functions it calls, on real files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flex.cli.ssh_config import BEGIN, managed_block, remove_block, with_block, write_config

REPO = Path(__file__).resolve().parents[2]


def test_config_ssh_command(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    for k in ("XDG_CONFIG_HOME", "FLEX_DEBUG"):
        env.pop(k, None)

    def config_ssh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flex", "config-ssh", *args], env=env, capture_output=True,
                              text=True, timeout=60, cwd="/")

    config = tmp_path / ".ssh" / "config"
    config.parent.mkdir()
    config.write_text("Host a\n    User me")
    config.chmod(0o640)
    r = config_ssh()
    assert r.returncode == 0 and str(config) in r.stdout, r.stderr
    text = config.read_text()
    assert text.startswith("Host a\n    User me\n" + BEGIN) and "Host *.flex\n" in text
    assert f" -m flex ssh --stdio %n\n    UserKnownHostsFile \"{tmp_path}/.config/flex/ssh/known_hosts\"" in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    r = config_ssh("--remove")
    assert r.returncode == 0 and config.read_text() == "Host a\n    User me", r.stderr


@pytest.mark.parametrize("before", [None, "", "Host a\n    User me\n", "Host a\n    User me", "\n\n# a comment\n\n"])
def test_block_round_trip(tmp_path: Path, before: str | None) -> None:
    config = tmp_path / "config"
    if before is not None:
        config.write_text(before)
    old = before or ""
    block = managed_block(None)
    text = with_block(old, block)
    assert text.startswith(old) and text.count(BEGIN) == 1 and text.endswith(block)
    write_config(config, text)
    assert config.read_text() == text
    if before is None:
        assert stat.S_IMODE(config.stat().st_mode) == 0o600  # a new one: only its owner reads it
    assert with_block(text, block) == text  # idempotent

    # lines the user added after the block stay where they are when it is rewritten
    text += "Host b\n    Port 2\n"
    rewritten = with_block(text, managed_block("https://flex.example.invalid"))
    assert rewritten.count(BEGIN) == 1 and rewritten.endswith(block.replace(
        "--stdio %n", "--stdio --server https://flex.example.invalid %n") + "Host b\n    Port 2\n")
    assert remove_block(rewritten) == old + "Host b\n    Port 2\n"
    assert remove_block(with_block(old, block)) == old
    assert remove_block(old) == old

    write_config(config, remove_block(with_block(old, block)))
    assert config.exists() == bool(old) and (not old or config.read_text() == old)  # a file we emptied goes
