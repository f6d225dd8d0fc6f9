"""`flex up` on the local daemon, as root and rootless (flextest): a real `flex daemon` process (embedded control
plane and runner), real containers. What a user sees: the progress, the JSON, the files, the daemon's life."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon.conftest import USER, Flex

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]


def _container(flex: Flex, env: str) -> dict[str, object]:
    [c] = json.loads(flex.mode.ok("ps", "-a", "--json"))
    return c  # type: ignore[no-any-return]


def _lean(flex: Flex, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`flex ARGS` under ``python -X importtime``: its result (without importtime's lines) and what it imported."""
    argv = flex.argv(*args)
    i = argv.index("-m")
    argv[i:i] = ["-X", "importtime"]
    r = subprocess.run(argv, env=flex.env(), capture_output=True, text=True, timeout=300, cwd=cwd)
    lines = r.stderr.splitlines(keepends=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    r.stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return r, imported


def test_up_creates_returns_at_once_when_unchanged_picks_up_an_edit_and_survives_the_daemon(
        flex: Flex, image: str) -> None:
    folder = flex.project("My App", {"image": image, "postCreateCommand": "id -un > /tmp/who"})

    # first up: starts the daemon, creates the environment from the folder, waits for Ready with progress
    r = flex.ok("up", cwd=folder)
    assert "starting the flex daemon" in r.stderr and "creating environment my-app" in r.stderr
    for step in ("SourceReady", "ImageReady", "ContainerReady", "Ready"):
        assert step in r.stderr, r.stderr
    assert "\033[" not in r.stderr  # not a terminal: plain lines
    state = flex.daemon_state()
    home_daemon = flex.mode.home / "daemon"
    for secret in (home_daemon / "daemon.sock", home_daemon / "server" / "admin-token", home_daemon / "runner.json"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert stat.S_IMODE(home_daemon.stat().st_mode) == 0o700
    assert state["rootless"] is flex.mode.rootless

    # --json as `devcontainer up` prints it, plus the environment; an unchanged second up is one read
    r = flex.ok("up", str(folder), "--json")
    out = json.loads(r.stdout)
    ctr = _container(flex, "my-app")
    assert out == {"outcome": "success", "containerId": ctr["id"], "remoteUser": "root",
                   "remoteWorkspaceFolder": "/workspaces/my-app", "environment": "my-app"}
    assert "creating" not in r.stderr and "updating" not in r.stderr and "phase" not in r.stderr
    # ... through the lean path (flex/cli/fast_up.py: no typer, httpx, pydantic or jsonschema), printing what
    # the full command (which --debug takes) prints, plain and --json
    for args in (("up",), ("up", "--json")):
        lean, imported = _lean(flex, *args, cwd=folder)
        full = flex.ok(*args, "--debug", cwd=folder)
        assert (lean.returncode, lean.stdout, lean.stderr) == (0, full.stdout, full.stderr), args
        assert not imported & {"typer", "httpx", "pydantic", "jsonschema"}, (args, lean.stderr)

    # the folder is bind-mounted: an edit on either side is seen on the other at once
    (folder / "from-host.txt").write_text("host\n")
    cid = str(ctr["id"])
    assert flex.mode.ok("exec", cid, "cat", "/workspaces/my-app/from-host.txt") == "host\n"
    if flex.mode.rootless:  # and owned right on both sides: container root is the folder's owner
        os.chown(folder / "from-host.txt", flex.mode.host_uid(), flex.mode.host_uid())
        assert flex.mode.ok("exec", cid, "sh", "-c", "stat -c %u /workspaces/my-app/from-host.txt; "
                            "echo inside > /workspaces/my-app/in.txt") == "0\n"
        assert (folder / "in.txt").read_text() == "inside\n"
        assert (folder / "in.txt").stat().st_uid == folder.stat().st_uid

    # `flex ls` and `flex show` speak to the same daemon
    ls = json.loads(flex.ok("ls", "--json").stdout)
    assert [e["metadata"]["name"] for e in ls] == ["my-app"]
    assert ls[0]["spec"]["source"] == {"git": None, "ref": None, "path": str(folder)}
    # the plain table: the fast path (no typer, one request over the socket) and the full command agree
    fast = flex.ok("ls").stdout
    header, row = fast.splitlines()
    assert header.split() == ["NAME", "PHASE", "READY", "SOURCE"]
    assert row.split(maxsplit=3) == ["my-app", "running", "true", str(folder)]  # (the folder's name has a space)
    assert flex.ok("ls", "--owner", ls[0]["metadata"]["owner"]).stdout == fast

    # an edit of devcontainer.json changes the spec (configHash): a new generation, waited for
    before = json.loads(flex.ok("show", "my-app", "--json").stdout)
    cfg = folder / ".devcontainer" / "devcontainer.json"
    cfg.write_text(cfg.read_text().replace("postCreateCommand", "postStartCommand"))
    r = flex.ok("up", cwd=folder)
    assert "ConfigChanged" in r.stderr and "updating environment my-app: configHash" in r.stderr
    after = json.loads(flex.ok("show", "my-app", "--json").stdout)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["status"]["observedGeneration"] == after["metadata"]["generation"]
    assert after["spec"]["configHash"] != before["spec"]["configHash"]
    # ... and the runner made a new container from it on the same folder (hooks run again, in it)
    recreated = _container(flex, "my-app")
    assert recreated["id"] != cid and recreated["state"] == "running"
    cid = str(recreated["id"])
    # a broken edit is the full command's to report, in one line with exit 7; mended, `up` is unchanged again
    good = cfg.read_text()
    cfg.write_text(json.dumps({"image": 5}))
    r = flex.run("up", cwd=folder)
    assert r.returncode == 7 and r.stderr.startswith("error: ") and "/image" in r.stderr, r.stderr
    cfg.write_text(good)
    r = flex.ok("up", "--json", cwd=folder)
    assert json.loads(r.stdout)["containerId"] == cid and "updating" not in r.stderr

    # exec through the daemon (no control plane configured): output, stdin and the exit code come back
    r = flex.run("exec", "my-app", "--", "sh", "-c", "cat /workspaces/my-app/from-host.txt; exit 3")
    assert (r.returncode, r.stdout) == (3, "host\n"), r.stderr
    r = flex.run("exec", "-i", "my-app", "--", "cat", input="through the tunnel\n")
    assert (r.returncode, r.stdout) == (0, "through the tunnel\n"), r.stderr
    # ... and so does ssh (`flex ssh` runs the system ssh; its ProxyCommand finds the daemon the same way)
    r = flex.run("ssh", "my-app", "echo", "through ssh; exit 4")
    assert (r.returncode, r.stdout) == (4, "through ssh\n"), r.stderr

    # the daemon killed with -9: the container keeps running, and the next `flex up` starts a new daemon
    os.kill(state["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{state['pid']}") and time.monotonic() < deadline:
        time.sleep(0.05)
    r = flex.run("ls")
    assert r.returncode == 6 and "the flex daemon is not running" in r.stderr and "hint: " in r.stderr
    assert _container(flex, "my-app")["state"] == "running"
    r = flex.ok("up", "--json", cwd=folder)
    assert json.loads(r.stdout)["containerId"] == cid
    assert flex.daemon_state()["pid"] != state["pid"]
    assert flex.daemon_state()["runnerId"] == state["runnerId"]  # the same runner, rejoined from its credential

    # stop keeps environments running; start brings the same daemon state back
    flex.ok("daemon", "stop")
    assert _container(flex, "my-app")["state"] == "running"
    assert json.loads(flex.ok("daemon", "status", "--json").stdout)["running"] is False
    flex.ok("daemon", "start")
    assert json.loads(flex.ok("daemon", "status", "--json").stdout)["running"] is True

    # a daemon left from before an upgrade (its state names another flex) is restarted by `flex up`, and the
    # environment keeps running through it: the same container
    old = flex.daemon_state()
    assert old["version"] == json.loads(flex.ok("version", "--json").stdout)["version"]
    state_file = flex.mode.home / "daemon" / "state.json"
    with open(state_file, "r+") as f:  # in place: the owner and mode stay the daemon's
        text = json.dumps({**old, "version": "0.0.1"})
        f.write(text)
        f.truncate(len(text))
    r = flex.ok("up", "--json", cwd=folder)
    assert json.loads(r.stdout)["containerId"] == cid
    assert "restarting the daemon" in r.stderr and "flex 0.0.1" in r.stderr, r.stderr
    assert flex.daemon_state()["pid"] != old["pid"] and flex.daemon_state()["version"] == old["version"]
    assert _container(flex, "my-app")["state"] == "running"

    # rm through the daemon tears the container down
    flex.ok("rm", "my-app")
    deadline = time.monotonic() + 60
    while json.loads(flex.mode.ok("ps", "-a", "--json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(flex.mode.ok("ps", "-a", "--json")) == []


REF_IMAGE = "localhost/flexref/minbase:1"


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)  # root podman does not start on these machines
def test_json_matches_what_the_reference_cli_prints_for_the_same_folder(flex: Flex) -> None:
    """`devcontainer up --docker-path podman` (rootless: podman runs as the user here) and `flex up --json` on
    one folder, field by field; flex adds ``environment``."""
    import shutil
    import subprocess

    from tests.conftest import REPO, debian_rootfs_tar
    from tests.runtime.containers.conftest import image_from_tar

    oracle = REPO / ".cache" / "devcontainers-cli" / "node_modules" / ".bin" / "devcontainer"
    if not oracle.exists() or shutil.which("podman") is None:
        from tests.conftest import missing

        missing("the devcontainer reference CLI or podman is not installed (installer/install.sh --dev)")
    tar = debian_rootfs_tar()
    image_from_tar(flex.mode, tar, REF_IMAGE)
    # a clean environment: the caller's XDG_RUNTIME_DIR (/run/user/0 under a root login) is not the user's
    user = ["runuser", "-u", USER, "--", "env", "-i", "HOME=/home/flextest", f"USER={USER}", f"LOGNAME={USER}",
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"]
    imported = subprocess.run([*user, "podman", "import", str(tar), REF_IMAGE], capture_output=True, text=True,
                              cwd="/")
    assert imported.returncode == 0, imported.stderr[-3000:]
    folder = flex.project("ref-app", {"image": REF_IMAGE, "remoteUser": "root",
                                      "workspaceFolder": "/workspaces/ref-app"})
    try:
        ref = subprocess.run([*user, str(oracle), "up", "--docker-path", "podman", "--workspace-folder", str(folder)],
                             capture_output=True, text=True, timeout=600, cwd="/")
        assert ref.returncode == 0, ref.stderr[-3000:]
        theirs = json.loads(ref.stdout.strip().splitlines()[-1])
        ours = json.loads(flex.ok("up", str(folder), "--json").stdout)
        assert ours["outcome"] == theirs["outcome"] == "success"
        for key in ("remoteUser", "remoteWorkspaceFolder"):
            assert ours[key] == theirs[key], key
        # each the full id of its engine's container (podman's are 64 hex digits, flex's runtime's 32)
        assert re.fullmatch(r"[0-9a-f]{64}", theirs["containerId"])
        assert re.fullmatch(r"[0-9a-f]{32}", ours["containerId"])
        assert ours["containerId"] == _container(flex, "ref-app")["id"]
        assert ours["environment"] == "ref-app"
        assert set(ours) - set(theirs) == {"environment"}
        # the second, unchanged `up` (the lean path) prints the same object
        assert json.loads(flex.ok("up", str(folder), "--json").stdout) == ours
        flex.ok("rm", "ref-app")
    finally:
        ids = subprocess.run([*user, "podman", "ps", "-aq", "--filter", f"label=devcontainer.local_folder={folder}"],
                             capture_output=True, text=True).stdout.split()
        for cid in ids:
            subprocess.run([*user, "podman", "rm", "-f", cid], capture_output=True)
        subprocess.run([*user, "podman", "rmi", "-f", REF_IMAGE], capture_output=True)


@pytest.mark.parametrize("mode", ["root"], indirect=True)  # the daemon's side is the same code in both modes
def test_ctrl_c_stops_waiting_watch_applies_each_save_and_a_terminal_gets_progress(flex: Flex, image: str) -> None:
    import shutil
    import subprocess

    folder = flex.project("watched", {"image": image})
    flex.ok("daemon", "start")

    # Ctrl-C while waiting: exit 130, and the environment is whole (created by one call) and becomes ready
    with subprocess.Popen(flex.argv("up", str(folder)), env=flex.env(), stderr=subprocess.PIPE, text=True,
                          stdout=subprocess.DEVNULL, cwd="/") as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("creating environment"):
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130, proc.stderr.read()
        assert "stopped waiting" in proc.stderr.read()
    r = flex.ok("up", str(folder), "--json")  # picks it up where it is: no second environment
    assert json.loads(r.stdout)["outcome"] == "success"
    assert [e["metadata"]["name"] for e in json.loads(flex.ok("ls", "--json").stdout)] == ["watched"]

    # --watch: every save of the devcontainer files is a ConfigChanged and a new generation, waited for; a save
    # made before the watch is set up (as soon as the first result shows) is not lost either
    with subprocess.Popen(flex.argv("up", str(folder), "--watch", "--json"), env=flex.env(), text=True,
                          stderr=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/") as proc:
        assert proc.stderr is not None and proc.stdout is not None
        try:
            gen = json.loads(flex.ok("show", "watched", "--json").stdout)["metadata"]["generation"]
            outs = [json.loads(proc.stdout.readline())]  # up's own result, before it starts watching
            seen: list[str] = []
            for i in range(2):
                edited = {"image": image, "containerEnv": {"A": str(i)}}
                (folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps(edited))
                for line in proc.stderr:
                    seen.append(line)
                    if line.startswith("environment watched is ready"):  # not RunnerReady's "runner local is ready"
                        break
                outs.append(json.loads(proc.stdout.readline()))
                assert len([line for line in seen if line.startswith("ConfigChanged: ") and
                            "devcontainer.json" in line]) == i + 1, seen
                assert json.loads(flex.ok("show", "watched", "--json").stdout)["metadata"]["generation"] == \
                    gen + i + 1
            assert any(line.startswith("watching ") for line in seen), seen
            # a broken save is reported and watching goes on; mended to what was applied, nothing is redone
            good = (folder / ".devcontainer" / "devcontainer.json").read_text()
            (folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps({"image": 5}))
            line = proc.stderr.readline()
            assert line.startswith("error: ") and "/image" in line, line
            (folder / ".devcontainer" / "devcontainer.json").write_text(good)
            for line in proc.stderr:
                if not line.startswith("hint: "):
                    break
            assert line.startswith("the config is valid again") and "nothing to do" in line, line
            assert json.loads(flex.ok("show", "watched", "--json").stdout)["metadata"]["generation"] == gen + 2
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 130
            assert [o["outcome"] for o in outs] == ["success", "success", "success"], (seen, outs)
        finally:
            if proc.poll() is None:  # a failed assertion or a timeout: the watcher must not outlive the test
                proc.kill()

    # on a terminal (tmux): ticks and colour; with NO_COLOR: the same lines, no escape codes
    if shutil.which("tmux") is None:
        from tests.conftest import missing

        missing("tmux is not installed (installer/install.sh --dev)")
    flex.ok("rm", "watched")
    while flex.run("show", "watched").returncode == 0:
        time.sleep(0.2)
    sock = str(flex.mode.home / "tmux.sock")
    env_args = [f"{k}={v}" for k, v in flex.env().items() if k in ("FLEX_HOME", "PYTHONPATH", "XDG_CONFIG_HOME")]
    cmd = " ".join(["env", *env_args, *flex.argv("up", str(folder)), "; echo EXIT=$?; sleep 600"])
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "200", "-y", "50", cmd], check=True)
    try:
        deadline = time.monotonic() + 300
        pane = ""
        while "EXIT=" not in pane and time.monotonic() < deadline:
            time.sleep(0.5)
            pane = subprocess.run(["tmux", "-S", sock, "capture-pane", "-p", "-e"], capture_output=True,
                                  text=True).stdout
        assert "EXIT=0" in pane, pane
        assert "✓" in pane and "\033[32m" in pane and "ContainerReady" in pane
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)

    # --shell: a shell as remoteUser in the workspace folder once it is ready (here stdin is a pipe: no tty)
    r = flex.run("up", str(folder), "--shell", input="echo inside-$(id -un)-$(pwd)\n")
    assert r.returncode == 0 and "inside-root-/workspaces/watched" in r.stdout, r.stderr
