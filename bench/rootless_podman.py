"""The rootless podman anchor's storage: the overlay driver, in a graph root of the run's own.

Left to itself, podman 4.3 as the test user here settles on ``vfs`` (its database then pins it), which copies
the whole rootfs for every container: seconds per start, where flex mounts an overlay. Like for like means
podman's overlay too, so each benchmark gives podman an ``XDG_CONFIG_HOME`` whose
``containers/storage.conf`` says so. (``CONTAINERS_STORAGE_CONF`` is not honoured for rootless podman 4.3.)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["overlay_config_home"]


def overlay_config_home(base: Path, uid: int) -> Path:
    """Make ``base/podman-xdg/containers/storage.conf`` (overlay; graph and run roots under ``base``), owned by
    ``uid``; returns the directory to pass as XDG_CONFIG_HOME."""
    xdg = base / "podman-xdg"
    conf_dir = xdg / "containers"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{base}/podman-graph"\n'
                    f'runroot = "{base}/podman-run"\n')
    for p in (xdg, conf_dir, conf):
        os.chown(p, uid, uid)
    return xdg
