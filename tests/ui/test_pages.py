"""The web UI in Debian's chromium against a real `flex server`: signing in and out, sessions that end,
the create form's field errors, the live list, what is escaped, who reaches what, and forged requests."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.ui.browser import screenshots, sign_in
from tests.ui.conftest import Flex

pytestmark = pytest.mark.timeout(300)


def _session_cookie(page: Page) -> dict[str, object]:
    [cookie] = [c for c in page.context.cookies() if c["name"] == "flex_session"]
    return dict(cookie)


def test_sign_in_is_a_session_cookie_that_sign_out_and_revoking_the_token_end(flex: Flex, page: Page) -> None:
    page.goto(flex.url + "/")
    page.get_by_label("Token").fill("flexu_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid credentials")
    screenshots(page, "signin")

    name, token = flex.user()
    sign_in(page, flex.url, token)
    cookie = _session_cookie(page)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["secure"] is False
    assert token not in page.url and token not in str(cookie["value"])
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script on the page can read it
    expect(page.get_by_text(name, exact=False).first).to_be_visible()

    # the cookie alone (as someone who copied it would use it) works until sign-out, then never again
    jar = {"flex_session": str(cookie["value"])}
    assert httpx.get(flex.url + "/tokens", cookies=jar).status_code == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert httpx.get(flex.url + "/tokens", cookies=jar).status_code == 303

    # revoking the token a session was opened with ends the session at once
    sign_in(page, flex.url, token)
    with flex.api(token) as c:
        [tok] = c.get("/api/v1/tokens").json()["items"]
        assert c.delete(f"/api/v1/tokens/{tok['id']}").status_code == 204
    page.goto(flex.url + "/tokens")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_sign_out_everywhere_ends_every_browsers_session(flex: Flex, page: Page) -> None:
    _, token = flex.user()
    other = page.context.browser.new_context()  # type: ignore[union-attr]
    second = other.new_page()
    sign_in(second, flex.url, token)
    sign_in(page, flex.url, token)
    page.goto(flex.url + "/tokens")
    expect(page.get_by_text("signed in to this page in 2 browsers")).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Sign out everywhere").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    second.goto(flex.url + "/")
    expect(second.get_by_role("heading", name="Sign in")).to_be_visible()
    other.close()


def test_the_pages_work_with_the_keyboard(flex: Flex, page: Page) -> None:
    _, token = flex.user()
    page.goto(flex.url + "/")
    expect(page.get_by_label("Token")).to_be_focused()  # autofocus
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.locator("summary")).to_be_focused()  # the first control of the page, past the navigation
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Name").first).to_be_focused()
    page.keyboard.type("kbd")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Git repository URL")).to_be_focused()
    page.keyboard.type("git://127.0.0.1:9/kbd.git")
    page.keyboard.press("Enter")  # submits the form
    expect(page.get_by_role("heading", name="kbd", exact=True)).to_be_visible()


def test_a_session_expires(flex: Flex, page: Page) -> None:
    _, token = flex.user()
    sign_in(page, flex.url, token)
    page.goto(flex.url + "/tokens")
    expect(page.get_by_role("heading", name="API tokens")).to_be_visible()
    # time passing, as the server sees it: the session's end moves into the past
    with sqlite3.connect(flex.server.home / "server" / "flex.db") as db:
        db.execute("UPDATE ui_sessions SET expires_at = '2000-01-01 00:00:00.000000'")
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert "next=%2Ftokens" in page.url


def test_create_shows_the_apis_validation_messages_next_to_the_field(flex: Flex, page: Page) -> None:
    _, token = flex.user()
    sign_in(page, flex.url, token)
    page.get_by_text("New environment").click()
    page.get_by_label("Name").first.fill("Bad Name")
    page.get_by_label("Git repository URL").fill("git://127.0.0.1:9/app.git")
    page.get_by_role("button", name="Create environment").click()
    name = page.locator("#f-name")
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#e-name")).to_contain_text("name: String should match pattern")
    page.get_by_label("Name").first.fill("app")
    page.get_by_label("CPUs").fill("lots")
    page.get_by_label("Memory").fill("2Gi")
    page.get_by_role("button", name="Create environment").click()
    expect(page.locator("#e-cpus")).to_contain_text("spec.resources.cpus:")
    expect(page.get_by_label("Git repository URL")).to_have_value("git://127.0.0.1:9/app.git")  # kept
    screenshots(page, "create-errors")
    page.get_by_label("CPUs").fill("0.5")
    page.get_by_role("button", name="Create environment").click()
    expect(page.get_by_role("heading", name="app", exact=True)).to_be_visible()
    expect(page.get_by_text("Waiting for a runner")).to_be_visible()  # none joined: say so, and what to do
    with flex.api(token) as c:
        assert c.get("/api/v1/environments/app").json()["spec"]["resources"]["cpus"] == 0.5


def test_the_list_follows_the_watch_stream_and_user_text_stays_text(flex: Flex, page: Page) -> None:
    user, token = flex.user()
    rid, credential = flex.runner("r-" + user)
    sign_in(page, flex.url, token)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    expect(page.locator("#live-state")).to_have_text("live")

    evil = "<script>alert(1)</script>"
    env = flex.create(token, "web", labels={"note": evil, "team": "web"})
    row = page.locator(f"#row-{env['metadata']['id']}")
    expect(row).to_be_visible()  # appeared without a reload
    expect(row).to_contain_text(f"note={evil}")
    message = f"<img src=x onerror=alert(2)>{evil}"
    env = flex.report(credential, env, {"phase": "failed", "runnerId": rid, "observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "False", "reason": "BuildFailed", "message": message}],
        "ports": [{"port": 3000, "url": "javascript:alert(3)"}, {"port": 8080, "url": "http://127.0.0.1:9/preview"}]})
    expect(row.locator(".phase")).to_have_text("failed")
    expect(row).to_contain_text("This environment failed")

    row.get_by_role("link", name="web").click()
    expect(page.get_by_role("status").first).to_contain_text("BuildFailed")
    expect(page.get_by_text(message).first).to_be_visible()
    assert page.locator("main script, main img").count() == 0  # nothing the runner or the user wrote became markup
    links = [a.get_attribute("href") for a in page.get_by_role("link", name="preview").all()]
    # the control plane writes each port's preview URL itself (issue 15): a runner's javascript: URL never shows
    assert links == [f"{flex.url}/p/{user}/web/3000/", f"{flex.url}/p/{user}/web/8080/"]
    screenshots(page, "environment-failed")
    assert dialogs == []
    expect(page.get_by_role("status").first).to_contain_text("Rebuild it to try again")
    # its runner does nothing here (a registered runner no process stands behind): the request waits for it
    page.get_by_role("region", name="Backups").get_by_role("button", name="Back up now").click()
    pending = page.get_by_role("region", name="Backups").locator("tbody tr")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("pending")
    expect(pending).to_contain_text("waits for its runner to make it")
    expect(pending.get_by_role("button", name="Delete backup")).to_have_count(0)  # not while pending

    page.goto(flex.url + "/?phase=failed")
    expect(page.locator(f"#row-{env['metadata']['id']}")).to_be_visible()
    page.goto(flex.url + "/?labels=team%3Dother")
    expect(page.get_by_text("No environments match these filters")).to_be_visible()
    page.goto(flex.url + "/")
    screenshots(page, "environments")
    with flex.api(token) as c:
        assert c.delete(f"/api/v1/environments/{env['metadata']['id']}").status_code == 202
    flex.report(credential, env, {"phase": "deleting", "runnerId": rid, "observedGeneration": 1})
    expect(page.locator(f"#row-{env['metadata']['id']} .phase")).to_have_text("deleting")
    with flex.api(credential) as c:
        assert c.delete(f"/api/v1/runners/{rid}/environments/{env['metadata']['id']}").status_code == 204
    expect(page.locator(f"#row-{env['metadata']['id']}")).to_have_count(0)


def test_another_users_environment_is_not_reachable_by_url(flex: Flex, page: Page) -> None:
    _, alice = flex.user()
    _, bob = flex.user()
    env = flex.create(alice, "secret-project")
    env_id = env["metadata"]["id"]
    sign_in(page, flex.url, bob)
    expect(page.get_by_text("secret-project")).to_have_count(0)
    response = page.goto(f"{flex.url}/environments/{env_id}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert page.request.get(f"{flex.url}/ui/rows/{env_id}").text() == ""
    assert "secret-project" not in page.request.get(f"{flex.url}/ui/environments/{env_id}/status").text()
    logs = page.request.get(f"{flex.url}/ui/environments/{env_id}/logs?source=hooks")
    assert logs.status == 404 and "secret-project" not in logs.text()
    # even with a valid CSRF token from bob's own page, bob cannot act on it
    page.goto(flex.url + "/tokens")
    csrf = page.locator("input[name=_csrf]").first.get_attribute("value")
    r = page.request.post(f"{flex.url}/environments/{env_id}/delete", form={"_csrf": csrf or ""},
                          headers={"Origin": flex.url})
    assert r.status == 404
    with flex.api(alice) as c:
        assert c.get(f"/api/v1/environments/{env_id}").json()["metadata"]["deletionTimestamp"] is None
    page.goto(flex.url + "/runners")  # not an admin
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()


@pytest.fixture
def evil_site() -> Iterator[tuple[str, dict[str, str]]]:
    """Another origin on 127.0.0.1 serving pages that post to the UI (set ``pages[path] = html``)."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

        def address_string(self) -> str:  # no reverse DNS lookup (there is no DNS here)
            return self.client_address[0]

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()


def test_a_forged_cross_site_post_is_refused(flex: Flex, page: Page, evil_site: tuple[str, dict[str, str]]) -> None:
    _, token = flex.user()
    env = flex.create(token, "victim")
    env_id = env["metadata"]["id"]
    sign_in(page, flex.url, token)
    page.goto(f"{flex.url}/environments/{env_id}")
    real_csrf = page.locator("input[name=_csrf]").first.get_attribute("value")
    evil, pages = evil_site
    # the attacker's page posts a form to the UI; it even knows the victim's CSRF token (a worse case than real)
    for path, fields in (("/plain", ""), ("/with-token", f'<input name="_csrf" value="{real_csrf}">')):
        pages[path] = (f'<form id="f" method="post" action="{flex.url}/environments/{env_id}/delete">{fields}</form>'
                       '<script>document.getElementById("f").submit()</script>')
        with page.expect_navigation(url=re.compile(re.escape(f"{flex.url}/environments/{env_id}/delete"))):
            page.goto(evil + path)
        expect(page.get_by_role("alert")).to_contain_text("cross-site request refused")
    with flex.api(token) as c:
        assert c.get(f"/api/v1/environments/{env_id}").json()["metadata"]["deletionTimestamp"] is None
    # the same form on the UI's own page works (the refusal is about where it came from)
    page.goto(f"{flex.url}/environments/{env_id}")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()
    with flex.api(token) as c:  # gone, or (bound to a runner of another test here) marked deleting
        r = c.get(f"/api/v1/environments/{env_id}")
        assert r.status_code == 404 or r.json()["metadata"]["deletionTimestamp"] is not None


def test_every_page_has_a_strict_csp_and_no_inline_script(flex: Flex, page: Page) -> None:
    sign_in(page, flex.url, flex.admin_token)
    violations: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    for path in ("/", "/runners", "/users", "/tokens", "/audit", "/signin"):
        response = page.goto(flex.url + path)
        assert response is not None and response.ok, path
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
        html = response.text()
        scripts = re.findall(r"<script\b[^>]*>", html)
        assert scripts and all(re.search(r'src="/static/[^"]+"', s) for s in scripts), (path, scripts)
        assert not re.search(r"(src|href)=\"(https?:)?//", html), path  # nothing from a CDN
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers
    assert violations == []
    r = httpx.get(flex.url + "/static/htmx-2.0.11.min.js")
    assert r.status_code == 200 and "htmx" in r.text
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    # the API and FastAPI's own /docs page are not the UI's: no UI policy there (/docs needs its inline script)
    assert "content-security-policy" not in httpx.get(flex.url + "/docs").headers
    assert "content-security-policy" not in httpx.get(flex.url + "/healthz").headers


def test_the_terminal_and_the_logs_say_why_before_the_environment_runs(flex: Flex, page: Page) -> None:
    owner, token = flex.user()
    env = flex.create(token, "not-yet", spec={"source": {"git": "git://127.0.0.1:9/none.git"},
                                              "runnerSelector": {"pool": "none"}})  # no runner takes it
    sign_in(page, flex.url, token)
    response = page.goto(f"{flex.url}/environments/{env['metadata']['id']}")
    assert response is not None and "style-src 'self';" in response.headers["content-security-policy"]
    scripts = re.findall(r'<script src="([^"]+)"', response.text())
    assert "/static/xterm-6.0.0.min.js" in scripts and all(s.startswith("/static/") for s in scripts)
    expect(page.locator("#logs-state")).to_contain_text("is not on a runner yet")
    page.get_by_role("button", name="Open terminal").click()
    expect(page.locator("#term-state")).to_have_text(
        "The environment is pending: a terminal opens once it is running (see Status above; Start it if it is "
        "stopped).")
    assert "The xterm.js authors" in httpx.get(flex.url + "/static/xterm-6.0.0.LICENSE.txt").text
    page.context.clear_cookies()  # an admin sees the page, but exec and logs are the owner's alone
    sign_in(page, flex.url, flex.admin_token)
    page.goto(f"{flex.url}/environments/{env['metadata']['id']}")
    expect(page.get_by_role("region", name="Terminal and logs")).to_contain_text(f"Only its owner, {owner}, can")
    expect(page.get_by_role("button", name="Open terminal")).to_have_count(0)
    backups = page.get_by_role("region", name="Backups")  # nothing to back up before a runner has it
    expect(backups).to_contain_text("Not on a runner yet")
    expect(backups.get_by_role("button", name="Back up now")).to_be_disabled()
