"""The overlay snapshotter against the Snapshotter conformance suite (flex/runtime/snapshots/testsuite.py),
storing unshifted ids (root runners) and shifted ones (rootless: its overlays carry userxattr)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.snapshots import testsuite
from flex.runtime.snapshots.overlay import OverlaySnapshotter

OWNERSHIP = {"unshifted": "unshifted", "shifted": "shifted:uid=0:1000:1,1:100000:65536;gid=0:1000:1,1:100000:65536"}


@pytest.mark.parametrize("ownership", sorted(OWNERSHIP))
@pytest.mark.parametrize("check", testsuite.CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_overlay_snapshotter(check: testsuite.Check, ownership: str, tmp_path: Path) -> None:
    home = Home.open(tmp_path / "home")
    db = MetadataDB(home.db_path)
    try:
        check(OverlaySnapshotter(home.sub("snapshots"), db, ownership=OWNERSHIP[ownership]), tmp_path)
    except testsuite.Unsupported as err:
        pytest.skip(str(err))
    finally:
        db.close()
