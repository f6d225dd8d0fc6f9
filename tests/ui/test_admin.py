"""The admin's pages and the tokens page, in chromium against a real `flex server`: runners with their
capacity and a join token whose command, pasted as shown, joins a runner; users; tokens shown once; the audit log."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.controlplane.server_process import start
from tests.ui.browser import screenshots, sign_in
from tests.ui.conftest import Flex

pytestmark = pytest.mark.timeout(300)


def test_runners_page_makes_a_join_token_whose_command_joins_a_runner(flex: Flex, page: Page,
                                                                      tmp_path: Path) -> None:
    sign_in(page, flex.url, flex.admin_token)
    page.goto(flex.url + "/runners")
    page.get_by_label("Labels it may declare").fill("zone=eu")
    page.get_by_role("button", name="Create join token").click()
    command = page.locator("code", has_text="flex runner join").inner_text()
    assert command.startswith(f"flex runner join {flex.url} --token flexj_") and command.endswith("--label zone=eu")
    assert "flexj_" not in page.url
    screenshots(page, "runners-join-token")

    argv = shlex.split(command)
    assert argv[0] == "flex"
    r = subprocess.run([sys.executable, "-m", "flex", *argv[1:], "--name", "pasted"], capture_output=True, text=True,
                       env={**os.environ, "FLEX_HOME": str(tmp_path / "runner-home")}, timeout=120)
    assert r.returncode == 0, r.stderr
    page.goto(flex.url + "/runners")
    row = page.get_by_role("row").filter(has_text="pasted")
    expect(row).to_contain_text("ready")
    expect(row).to_contain_text("zone=eu")
    expect(row.locator("meter").first).to_be_visible()
    screenshots(page, "runners")
    r = subprocess.run([sys.executable, "-m", "flex", *argv[1:], "--name", "again"], capture_output=True, text=True,
                       env={**os.environ, "FLEX_HOME": str(tmp_path / "other-home")}, timeout=120)
    assert r.returncode != 0  # single use


def test_users_tokens_and_the_audit_log(flex: Flex, page: Page) -> None:
    sign_in(page, flex.url, flex.admin_token)
    page.goto(flex.url + "/users")
    page.get_by_label("Name").fill("carol")
    page.get_by_role("button", name="Create user").click()
    first = page.locator("#new-user-token").inner_text()
    assert first.startswith("flexu_")
    screenshots(page, "users")
    page.get_by_label("Name").fill("carol")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("alert")).to_contain_text("already exists")

    # carol signs in with it in another browser, makes a token: shown once, then never again
    other = page.context.browser.new_context()  # type: ignore[union-attr]
    carol = other.new_page()
    sign_in(carol, flex.url, first)
    carol.goto(flex.url + "/tokens")
    carol.get_by_label("Name").fill("laptop")
    carol.get_by_label("Access").select_option("read")
    carol.get_by_role("button", name="Create token").click()
    secret = carol.locator("#new-token").inner_text()
    assert secret.startswith("flexu_")
    screenshots(carol, "tokens")
    with httpx.Client(base_url=flex.url, headers={"Authorization": f"Bearer {secret}"}) as c:
        assert c.get("/api/v1/environments").status_code == 200
        assert c.post("/api/v1/environments", json={}).status_code == 403  # read only
    carol.goto(flex.url + "/tokens")
    assert secret not in carol.content()
    carol.once("dialog", lambda d: d.accept())
    carol.get_by_role("row").filter(has_text="laptop").get_by_role("button", name="Revoke laptop").click()
    expect(carol.get_by_role("row").filter(has_text="laptop")).to_have_count(0)
    gone = httpx.get(flex.url + "/api/v1/environments", headers={"Authorization": f"Bearer {secret}"})
    assert gone.status_code == 401
    other.close()

    page.goto(flex.url + "/audit?actor=user%3Acarol")
    expect(page.get_by_role("cell", name="token.delete")).to_be_visible()
    expect(page.get_by_role("cell", name="ui.signin")).to_be_visible()
    assert secret not in page.content() and first not in page.content()
    screenshots(page, "audit")


def test_a_runner_gone_offline_is_said_so_on_every_page(tmp_path: Path, page: Page) -> None:
    # its own server: runners here go offline after a second without a heartbeat
    server = start(tmp_path / "home", "--heartbeat-timeout", "1", env={"FLEX_SERVER_SWEEP_INTERVAL": "0.5"})
    try:
        flex = Flex(server)
        rid, credential = flex.runner("laptop")
        env = flex.create(flex.admin_token, "work")
        flex.report(credential, env, {"phase": "running", "runnerId": rid, "observedGeneration": 1})
        sign_in(page, flex.url, flex.admin_token)
        row = page.locator(f"#row-{env['metadata']['id']}")
        expect(row).to_contain_text("(offline)", timeout=30_000)  # the sweep's status change, live in the list
        expect(row).to_contain_text("Runner laptop is offline")
        row.get_by_role("link", name="work").click()
        expect(page.get_by_role("status").first).to_contain_text("Runner laptop is offline")
        expect(page.get_by_role("status").first).to_contain_text("resumes when the runner reconnects")
        screenshots(page, "environment-runner-offline")
        backups = page.get_by_role("region", name="Backups")  # asked for anyway: recorded, waiting for it
        expect(backups).to_contain_text("Its runner is offline: a backup asked for now is recorded and waits")
        backups.get_by_role("button", name="Back up now").click()
        expect(page.get_by_role("region", name="Backups").locator("tbody tr")).to_contain_text("pending")
        page.goto(flex.url + "/runners")
        expect(page.get_by_role("row").filter(has_text="laptop")).to_contain_text("no heartbeat")
    finally:
        server.stop()
