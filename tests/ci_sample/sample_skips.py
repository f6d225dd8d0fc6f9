"""Run only by tests/test_ci_skips.py (the name does not match test_*.py): one skip of each kind."""

import pytest

from tests.conftest import missing


def test_needs_a_missing_tool() -> None:
    missing("frobnicate is not installed (installer/install.sh --dev installs it)")


@pytest.mark.skipif(True, reason="needs root (mount)")
def test_needs_root() -> None:
    pass


def test_does_not_apply_here() -> None:
    pytest.skip("the cgroup v2 branch; this host is v1")
