"""The code base stays clean: ruff, mypy --strict, and the layer contracts of DESIGN.md."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import missing

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            missing(f"{name} is not installed (installer/install.sh --dev installs it)")
        return found
    return str(path)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    r = _run(_tool("ruff"), "check", "flex", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_is_clean() -> None:
    r = _run(_tool("mypy"), "--strict", "flex")
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr


def test_layers_keep_to_the_design() -> None:
    r = _run(_tool("lint-imports"))
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr
