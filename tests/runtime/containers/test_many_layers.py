"""An image of 100 layers starts, as root and rootless: more lower dirs than one mount(2) option page
holds as absolute paths (~59 here), as pulled from a registry. Real crun, real overlayfs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.runtime.containers.conftest import Mode

pytestmark = pytest.mark.userns

LAYERS = 100


def test_a_100_layer_image_starts(mode: Mode, image: str, images: dict[str, str], workdir: Path) -> None:
    key = f"many:{mode.name}"
    if key not in images:
        base_layers = 1  # image_for stores minbase as one layer, as `flex image bootstrap` does
        proc = subprocess.run(mode.python_argv("-m", "tests.runtime.containers.layered_image", image,
                                               "flextest/many-layers:1", str(LAYERS - base_layers)),
                              env=mode.env(), capture_output=True, text=True, timeout=900, cwd="/")
        assert proc.returncode == 0, proc.stderr
        images[key] = proc.stdout.strip()
    out = mode.ok("run", "--rm", images[key], "sh", "-c", "ls /layers | wc -l; cat /top; id -u")
    assert out.split() == [str(LAYERS - 1), str(LAYERS - 2), "0"]
