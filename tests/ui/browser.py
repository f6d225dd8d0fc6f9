"""What every browser test of the web UI shares: Debian's chromium under pytest-playwright (never
`playwright install`), signing in through the page, and screenshots at both screen sizes: into docs/ui/ with
FLEX_UI_SCREENSHOTS=1 (how docs/ui.md's pictures are made), else into a temporary folder, so a test run leaves the
checkout as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import REPO, missing

CHROMIUM = "/usr/bin/chromium"
SHOTS = (REPO / "docs" / "ui" if os.environ.get("FLEX_UI_SCREENSHOTS") == "1"
         else Path(tempfile.gettempdir()) / "flex-ui-screenshots")
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    if shutil.which(CHROMIUM) is None:
        missing("Debian's chromium is not installed (installer/install.sh --dev)")
    return {"executable_path": CHROMIUM, "headless": True,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run"]}


@pytest.fixture(scope="session")
def browser_context_args() -> dict[str, Any]:
    return {"viewport": {"width": 1280, "height": 800}}


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url + "/")
    expect(page).to_have_url(url + "/signin?next=%2F")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()


def screenshots(page: Page, name: str) -> list[Path]:
    """The page as it is, at a laptop's and a phone's size (then back to the laptop's)."""
    out = []
    for size, (w, h) in SIZES.items():
        page.set_viewport_size({"width": w, "height": h})
        path = SHOTS / f"{name}-{size}.png"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        out.append(path)
    page.set_viewport_size({"width": 1280, "height": 800})
    return out
