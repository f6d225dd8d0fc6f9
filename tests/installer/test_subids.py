"""The installer gives a new user a subordinate id range no existing entry of /etc/subuid or /etc/subgid
overlaps (installer/lib/subids.sh, run by bash on files like those)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "installer" / "lib" / "subids.sh"


def _start(tmp: Path, subuid: str, subgid: str) -> int:
    (tmp / "subuid").write_text(subuid)
    (tmp / "subgid").write_text(subgid)
    r = subprocess.run(["bash", "-c", f'. "{LIB}"; free_subid_start "$1" "$2"', "-", str(tmp / "subuid"),
                        str(tmp / "subgid")], capture_output=True, text=True, check=True)
    return int(r.stdout)


@pytest.mark.parametrize(("subuid", "subgid", "want"), [
    ("", "", 100000),
    ("alice:100000:65536\n", "alice:100000:65536\n", 165536),
    # 100000-165535 is taken in subgid only: still taken
    ("", "bob:100000:65536\n", 165536),
    # out of order, and a gap too small for 65536 ids before the next range
    ("carol:231072:65536\nalice:100000:65536\nbob:165536:65000\n", "", 296608),
    # a gap big enough is used
    ("a:100000:1000\nb:500000:65536\n", "a:100000:1000\n", 101000),
    # a range below 100000 and a malformed line do not matter
    ("root:10000:5000\n# comment\nbroken\n", "", 100000),
])
def test_the_new_range_overlaps_no_existing_one(tmp_path: Path, subuid: str, subgid: str, want: int) -> None:
    assert _start(tmp_path, subuid, subgid) == want
