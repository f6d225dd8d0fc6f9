"""The web UI with everything real: chromium signs in to a real `flex server`, creates an environment from a
repository on the test git daemon through the form, and watches a real `flex runner run` (as root) bring it to
running, follows its hook output live, uses its terminal, rebuilds it, backs it up and restores the backup as a
new environment, stops it, starts it and deletes it, each change appearing in the open page without a reload."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from flex.client import FlexClient
from tests.runner.conftest import GitServer, Runner, Server, devcontainer
from tests.ui.browser import browser_context_args, browser_type_launch_args, screenshots, sign_in  # noqa: F401

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]
SLOW = 240_000  # ms: a loaded CI machine builds and starts a container in well under this


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_create_watch_it_run_stop_start_and_delete_in_the_browser(
        server: Server, runner: Runner, git_server: GitServer, image: str, page: Page) -> None:
    url = git_server.repo("uiapp", devcontainer(image, forwardPorts=[3000],
                                                postCreateCommand="echo hook-says-$((6*7))"))
    runner.join(server)
    runner.start()
    token = server.admin.create_user("dev").token
    sign_in(page, server.url, token)

    page.get_by_text("New environment").click()
    page.get_by_label("Name").first.fill("uiapp")
    page.get_by_label("Git repository URL").fill(url)
    page.get_by_label("CPUs").fill("0.5")
    page.get_by_label("Memory").fill("512Mi")
    page.get_by_label("Disk").fill("1Gi")
    page.get_by_role("button", name="Create environment").click()
    expect(page.get_by_role("heading", name="uiapp", exact=True)).to_be_visible()
    page.get_by_label("Source", exact=True).select_option("hooks")  # followed from before the hook runs
    phase = page.locator("#env-live .head .phase")
    expect(phase).to_have_text("running", timeout=SLOW)  # the page follows the watch stream: no reload
    timeline = page.get_by_role("region", name="Conditions")
    expect(timeline).to_contain_text("Ready = True")
    expect(page.get_by_role("region", name="Status")).to_contain_text("r1 (ready)")
    expect(page.get_by_role("region", name="Connect")).to_contain_text("flex exec -it uiapp -- bash")
    expect(page.locator("#logs")).to_contain_text("hook-says-42")  # arrived live: the page never reloaded
    expect(page.locator("#logs")).to_contain_text("--- postCreateCommand (exit 0)")
    screenshots(page, "environment")

    terminal(page)
    env_id = page.locator("#env-live").get_attribute("data-env")
    rebuild(page, runner, str(env_id))
    backup_and_restore(page, runner, str(env_id))
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "flex_session")
    other = server.admin.create_user("other").token
    with FlexClient(server.url, other) as client:  # kept off every runner: it only has to exist
        client.create_environment("theirs", {"source": {"git": url}, "runnerSelector": {"pool": "none"}})
    assert handshake(server.url, "uiapp", cookie, server.url) == 101
    assert handshake(server.url, "uiapp", cookie, "http://127.0.0.1:1") == 403  # same site, not origin
    assert handshake(server.url, "uiapp", cookie, None) == 403
    assert handshake(server.url, "theirs", cookie, server.url) == 404
    assert handshake(server.url, "theirs", None, server.url, token=other) == 412  # it does exist
    # and in the browser: the same script from this server's page opens the shell; from another origin on the
    # same host (the same site: the cookie rides along) it does not
    assert open_exec(page, server.url) == "open"
    page.route("http://127.0.0.1:1/evil", lambda route: route.fulfill(content_type="text/html", body="<p>hi</p>"))
    page.goto("http://127.0.0.1:1/evil")
    assert open_exec(page, server.url) == "refused"
    page.goto(server.url + f"/environments/{env_id}")

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Stop").click()
    expect(phase).to_have_text("stopped", timeout=SLOW)
    expect(page.get_by_role("button", name="Start")).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Start").click()
    expect(phase).to_have_text("running", timeout=SLOW)

    page.goto(server.url + "/")
    row = page.get_by_role("row").filter(has_text="uiapp")
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("r1")
    screenshots(page, "environments-running")
    env_id = row.get_attribute("data-env")

    row.get_by_role("link", name="uiapp").click()
    page.once("dialog", lambda d: d.accept())
    # the environment's own Delete: the stop above left a backup (on stop, by default) with one of its own
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()
    expect(page.locator(f"#row-{env_id}")).to_have_count(0, timeout=SLOW)  # gone once the runner tore it down
    assert runner.containers(str(env_id)) == []


def terminal(page: Page) -> None:
    """The page's terminal: a shell over the exec WebSocket; keystrokes, output, a resize, the exit."""
    card = page.get_by_role("region", name="Terminal")
    card.get_by_role("button", name="Open terminal").click()
    state = page.locator("#term-state")
    expect(state).to_have_text("Connected")
    screen = page.locator("#terminal .xterm-rows")
    expect(screen).to_contain_text("/workspaces/uiapp")  # bash's prompt: as a person, type once it is there
    page.keyboard.type("echo hi-$((6*7))")
    page.keyboard.press("Enter")
    expect(screen).to_contain_text("hi-42")  # the shell computed it: the typed line says $((6*7))

    box = page.locator("#terminal")
    cols = box.get_attribute("data-cols")
    page.keyboard.type("echo size=$(stty size)")
    page.keyboard.press("Enter")
    expect(screen).to_contain_text(f"size={box.get_attribute('data-rows')} {cols}")
    page.set_viewport_size({"width": 700, "height": 800})  # the terminal refits; the shell is told
    expect(box).not_to_have_attribute("data-cols", str(cols))
    page.keyboard.type("echo size=$(stty size)")
    page.keyboard.press("Enter")
    expect(screen).to_contain_text(f"size={box.get_attribute('data-rows')} {box.get_attribute('data-cols')}")
    page.set_viewport_size({"width": 1280, "height": 800})
    screenshots(page, "environment-terminal")

    page.keyboard.type("exit 3")
    page.keyboard.press("Enter")
    expect(state).to_have_text("The shell exited with code 3.")
    expect(card.get_by_role("button", name="Open a new terminal")).to_be_enabled()


def open_exec(page: Page, url: str) -> str:
    """A script in ``page`` opens uiapp's exec WebSocket with the browser's cookies: 'open' or 'refused'."""
    target = url.replace("http", "ws", 1) + "/api/v1/environments/uiapp/exec"
    return str(page.evaluate("""url => new Promise(done => {
        const ws = new WebSocket(url);
        ws.onopen = () => { ws.close(); done("open"); };
        ws.onclose = () => done("refused");
    })""", target))


def handshake(url: str, env: str, cookie: str | None, origin: str | None, token: str | None = None) -> int:
    """The HTTP status answering a WebSocket handshake to ``env``'s exec as a browser would open it."""
    headers = {**({"Cookie": f"flex_session={cookie}"} if cookie else {}),
               **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with connect(url.replace("http", "ws", 1) + f"/api/v1/environments/{env}/exec",
                     origin=origin, additional_headers=headers):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def rebuild(page: Page, runner: Runner, env_id: str) -> None:
    """Rebuild: a new container from the same spec; the workspace stays, the old container's files do not."""
    (old,) = runner.containers(env_id)
    runner.exec(old["id"], "touch /workspaces/uiapp/kept /root/gone")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Rebuild").click()
    expect(page.get_by_role("region", name="Status")).to_contain_text("2 (observed 2)", timeout=SLOW)
    expect(page.locator("#env-live .head .phase")).to_have_text("running", timeout=SLOW)
    (new,) = runner.containers(env_id)
    assert new["id"] != old["id"]
    found = runner.exec(new["id"], "for f in /workspaces/uiapp/kept /root/gone; do test -e $f && echo $f; done; true")
    assert found.split() == ["/workspaces/uiapp/kept"]


def backup_and_restore(page: Page, runner: Runner, env_id: str) -> None:
    """Back up now: the list follows it to completed; Restore as a new name (a bad one is refused next to the
    field) gives a new environment that has the file; the backup is deleted after a confirmation."""
    (ctr,) = runner.containers(env_id)
    runner.exec(ctr["id"], "echo saved-$((6*7)) > /workspaces/uiapp/saved.txt")
    card = page.get_by_role("region", name="Backups")
    expect(card).to_contain_text("No backups yet.")
    card.get_by_role("button", name="Back up now").click()
    row = card.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator(".phase")).to_have_text("completed", timeout=SLOW)  # live: the page was not reloaded
    expect(row).to_contain_text("manual")
    status = page.get_by_role("region", name="Status")
    expect(status).to_contain_text("Last backup")
    expect(status.locator("dd", has_text="files")).to_contain_text("completed")
    screenshots(page, "environment-backups")

    card.get_by_role("link", name="Restore as…").click()
    name = page.get_by_label("New environment name")
    name.fill("Not_A_Name")
    page.get_by_role("button", name="Restore").click()
    expect(page.locator("#e-as")).to_contain_text("name")  # next to the field, the form kept
    expect(name).to_have_value("Not_A_Name")
    name.fill("uiapp")  # taken: the same place says so
    page.get_by_role("button", name="Restore").click()
    expect(page.locator("#e-as")).to_contain_text("uiapp")
    name.fill("uicopy")
    page.get_by_role("button", name="Restore").click()
    expect(page.get_by_role("heading", name="uicopy", exact=True)).to_be_visible()
    expect(page.locator("#env-live .head .phase")).to_have_text("running", timeout=SLOW)
    copy_id = str(page.locator("#env-live").get_attribute("data-env"))
    (cc,) = runner.containers(copy_id)
    assert runner.exec(cc["id"], "cat /workspaces/uicopy/saved.txt") == "saved-42\n"
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete", exact=True).click()  # the copy: not waited for
    expect(page.get_by_role("heading", name="Environments")).to_be_visible()

    page.goto(page.url.rstrip("/") + f"/environments/{env_id}")
    card = page.get_by_role("region", name="Backups")
    page.once("dialog", lambda d: d.accept())
    card.get_by_role("button", name="Delete backup").click()
    expect(card).to_contain_text("No backups yet.")
