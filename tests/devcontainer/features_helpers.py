"""Helpers for feature tests: local feature folders written from dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_feature(folder: Path, meta: dict[str, Any], install: str = "echo installed\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "devcontainer-feature.json").write_text(json.dumps(meta, indent=2))
    (folder / "install.sh").write_text("#!/bin/sh\nset -e\n" + install)
    return folder
