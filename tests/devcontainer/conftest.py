"""Fixtures for the devcontainer tests: workspace folders with configuration files in them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """write_config(config_or_text, at=".devcontainer/devcontainer.json", folder="proj") -> the file."""

    def write(config: Any, at: str = ".devcontainer/devcontainer.json", folder: str = "proj") -> Path:
        path = tmp_path / folder / at
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
        return path

    return write
