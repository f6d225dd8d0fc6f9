"""`flex up [PATH | GIT_URL]`: create or update the environment of a folder (or repository) and wait until it
is Ready, on the local daemon (started when needed) or on the control plane of --server / `flex login`.

A second `up` of an unchanged folder is one read. An edit of the devcontainer files changes the spec's
configHash, so its generation, and the runner recreates the container. --json prints what `devcontainer up`
prints, plus ``environment``. Ctrl-C stops waiting; what was created stays whole (one API call creates it).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flex.api import Environment
    from flex.cli.target import Target
    from flex.cli.up_personal import Dotfiles
    from flex.cli.up_source import Desired
    from flex.cli.up_wait import Progress
    from flex.client import FlexClient

__all__ = ["apply", "register", "up_result"]

_ERROR_DESCRIPTION = "An error occurred setting up the container."


def _patch(env: Environment, want: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that makes ``env``'s spec what ``want`` says (only the keys `up` owns)."""
    have = env.spec.to_wire()
    patch: dict[str, Any] = {k: v for k, v in want.items() if k not in ("source", "devcontainer") and have.get(k) != v}
    dc = want.get("devcontainer", {"path": None})
    if (have.get("devcontainer") or {}).get("path") != dc.get("path"):
        patch["devcontainer"] = {"path": dc.get("path"), "config": None}
    return patch


def apply(client: FlexClient, want: Desired, progress: Progress, *, recreate: bool = False) -> Environment:
    """Create the environment, or patch it to ``want``; ``recreate`` removes it first (--remove-existing-container)."""
    from flex.errors import Conflict, NotFound

    try:
        env: Environment | None = client.get_environment(want.name)
    except NotFound:
        env = None
    if env is not None:
        source = env.spec.source.to_wire()
        wanted = {k: v for k, v in want.spec["source"].items()}
        if {k: v for k, v in source.items() if v is not None} != wanted and not (
                "git" in wanted and source.get("git") == wanted["git"]):
            where = source.get("path") or source.get("git")
            raise Conflict(f"environment {want.name!r} already exists for {where}",
                           hint=f"name this one with --name NAME, or remove the other with `flex rm {want.name}`")
        if recreate or env.metadata.deleting:
            _remove_and_wait(client, env, progress)
            env = None
    if env is None:
        progress.line(f"creating environment {want.name}")
        with _sigint_deferred():  # a Ctrl-C mid-request would leave it unknown whether it was made
            return client.create_environment(want.name, want.spec)
    patch = _patch(env, want.spec)
    if not patch:
        return env
    if "configHash" in patch and env.spec.config_hash is not None:
        progress.line("ConfigChanged: the devcontainer files changed since the last `flex up`")
    progress.line(f"updating environment {want.name}: {', '.join(sorted(patch))}")
    with _sigint_deferred():
        return client.patch_environment(want.name, {"spec": patch}, resource_version=env.metadata.resource_version)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block is done, then raise it: the request either went whole or not at all
    (a KeyboardInterrupt inside pydantic's serializer even surfaces as a serialization error)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if caught:
        raise KeyboardInterrupt


def _remove_and_wait(client: FlexClient, env: Environment, progress: Progress) -> None:
    import time

    from flex.errors import NotFound

    progress.line(f"removing environment {env.metadata.name} (and its container)")
    if not env.metadata.deleting:
        client.delete_environment(env.metadata.name)
    while True:
        try:
            client.get_environment(env.metadata.name)
        except NotFound:
            return
        time.sleep(0.1)


def _container_id(env: Environment, local: bool) -> str | None:
    """The container's id: in full from this machine's runtime when the runner is the local daemon's (as the
    reference prints the engine's full id), else the short id the runner's ContainerReady condition names."""
    from flex.cli.up_output import short_container_id

    c = env.status.condition("ContainerReady")
    short = short_container_id(c.message if c else None)
    if local and short:
        from flex.errors import FlexError

        try:
            from flex.runtime.base.home import Home
            from flex.runtime.containers.store import Containers

            full = Containers(Home.open()).get(f"flex-{env.metadata.id}").id
            return full if full.startswith(short) else short
        except (FlexError, OSError):
            return short
    return short


def up_result(env: Environment, want: Desired, *, local: bool = False) -> dict[str, Any]:
    """What `devcontainer up` prints on success, plus flex's ``environment``."""
    from flex.cli.up_output import up_result_fields

    return up_result_fields(env.metadata.name, want.config, _container_id(env, local))


def _watched(want: Desired) -> list[str]:
    if want.config_file is None or want.folder is None:
        return []
    return [str(want.config_file.parent if want.config_file.parent != want.folder else want.config_file)]


def _check_lockfile(want: Desired, progress: Progress) -> None:
    """--frozen-lockfile: the folder's features resolved here (through this machine's feature cache, which
    the daemon's runner shares) against its devcontainer-lock.json, before anything is created."""
    from flex.devcontainer.config import read_config
    from flex.errors import UsageError
    from flex.runner.build.features import check_frozen_lockfile, resolve_features

    if want.folder is None:
        raise UsageError("--frozen-lockfile checks a folder's devcontainer-lock.json; a git URL has none here",
                         hint="run it in a checkout: flex up PATH --frozen-lockfile")
    resolved = read_config(want.folder, want.config_file, mount_git_root=False, cwd=want.folder)
    check_frozen_lockfile(resolved, resolve_features(resolved, progress=progress.line))


def _stream(target: Target, server: str | None, token: str | None) -> tuple[str, str | None]:
    """Where the environment's exec stream opens: the control plane, or the local daemon's socket."""
    from flex.cli.target import endpoint

    return endpoint(server, token) if target.local else (str(target.server), target.token)


def _personalize(env: Environment, stream: tuple[str, str | None], progress: Progress,
                 identity: dict[str, str], dotfiles: Dotfiles | None, waited: bool) -> None:
    from flex.cli.up_personal import apply_dotfiles, apply_git_identity

    name = env.metadata.name
    installed = apply_git_identity(*stream, name, identity if waited else {}, progress)
    if dotfiles is not None and installed:
        progress.line("dotfiles: already installed in this container")
    elif dotfiles is not None:
        apply_dotfiles(*stream, name, dotfiles, progress)


def _shell(env: Environment, want: Desired, target: Target, stream: tuple[str, str | None]) -> int:
    import os
    import shutil

    login = "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi"
    sys.stdout.flush()
    sys.stderr.flush()
    if not target.local:  # through the control plane's exec stream, as `flex exec -i -t` (remoteUser, workspace)
        from flex.cli.exec import run_exec

        tty = sys.stdin.isatty()
        raise typer.Exit(run_exec(*stream, env.metadata.name, ["/bin/sh", "-c", login], interactive=True, tty=tty))
    res = up_result(env, want)
    cid = f"flex-{env.metadata.id}"
    tty_flag = ["-t"] if sys.stdin.isatty() else []
    argv = [sys.executable, "-m", "flex", "runtime", "exec", "-i", *tty_flag, "-u", res["remoteUser"], "-w",
            res["remoteWorkspaceFolder"], cid, "/bin/sh", "-c", login]
    os.execv(shutil.which(argv[0]) or argv[0], argv)
    return 0  # not reached


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        path: str = typer.Argument(None, help="A folder (default: the current one) or a git URL."),
        workspace_folder: str = typer.Option(None, "--workspace-folder", help="The folder (as the devcontainer CLI)."),
        config: str = typer.Option(None, "--config", help="The devcontainer.json (default: found as the spec says)."),
        name: str = typer.Option(None, "--name", help="The environment's name (default: from the folder)."),
        ref: str = typer.Option(None, "--ref", help="Branch, tag or commit of a git URL."),
        docker: bool = typer.Option(False, "--docker", help="Run Docker inside the environment."),
        remove_existing_container: bool = typer.Option(False, "--remove-existing-container",
                                                       help="Remove the environment's container and create it anew."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Build without the layer cache (a new container)."),
        shell: bool = typer.Option(False, "--shell", help="Open a shell as remoteUser once it is ready."),
        watch: bool = typer.Option(False, "--watch", help="Stay, and apply each saved edit of the devcontainer files."),
        json_: bool = typer.Option(False, "--json", help="Print one JSON object, as `devcontainer up` does."),
        server: str = typer.Option(None, "--server", help="Control plane URL (default: `flex login`, or the daemon)."),
        token: str = typer.Option(None, "--token", help="API token for --server."),
        dotfiles_repository: str = typer.Option(None, "--dotfiles-repository",
                                                help="Your dotfiles: a git URL, or owner/repo on GitHub."),
        dotfiles_install_command: str = typer.Option(None, "--dotfiles-install-command",
                                                     help="Run in it (default: install.sh, setup.sh, ...)."),
        dotfiles_target_path: str = typer.Option("~/dotfiles", "--dotfiles-target-path",
                                                 help="Where it goes in the environment."),
        git_user_name: str = typer.Option(None, "--git-user-name", help="user.name inside (default: git's here)."),
        git_user_email: str = typer.Option(None, "--git-user-email", help="user.email inside (default: git's here)."),
        no_git_identity: bool = typer.Option(False, "--no-git-identity", help="Do not copy the git identity in."),
        frozen_lockfile: bool = typer.Option(False, "--frozen-lockfile",
                                             help="Fail when devcontainer-lock.json would change."),
        debug: bool = typer.Option(False, "--debug", hidden=True),
    ) -> None:
        """Create or update the environment of a folder or repository, and wait until it is ready."""
        from flex.cli.target import connect, resolve
        from flex.cli.up_personal import Dotfiles, git_identity
        from flex.cli.up_source import desired
        from flex.cli.up_wait import Progress, is_ready, wait_ready
        from flex.errors import FlexError

        progress = Progress(quiet=False)
        want = None
        try:
            target = resolve(server, token)
            want = desired(path, workspace_folder, config, remote=not target.local, name=name, ref=ref,
                           docker=docker)
            if frozen_lockfile:
                _check_lockfile(want, progress)
            # read now, before a runner may move a folder under FLEX_HOME into a container's id range
            identity = {} if no_git_identity else git_identity(want.folder, git_user_name, git_user_email)
            dotfiles = Dotfiles(dotfiles_repository, dotfiles_install_command or None, dotfiles_target_path) \
                if dotfiles_repository else None
            starting = False
            if target.local:
                from flex.daemon import daemon_info
                from flex.home import flex_home

                starting = daemon_info(flex_home()) is None
                if starting:
                    progress.line("starting the flex daemon")
            client, target = connect(server, token, start=True)
            if starting:
                progress.step("daemon started")
            with client:
                env = apply(client, want, progress, recreate=remove_existing_container or no_cache)
                waited = not is_ready(env)
                if waited:
                    env = wait_ready(client, want.name, env.metadata.generation, progress,
                                     image=want.config.get("image"))
                    progress.done(f"environment {want.name} is ready")
                # a new container (or dotfiles asked for): an unchanged `up` stays one read
                if (waited and identity) or dotfiles is not None:
                    _personalize(env, _stream(target, server, token), progress, identity, dotfiles, waited)
                if json_:
                    print(json.dumps(up_result(env, want, local=target.local)), flush=True)
                else:
                    from flex.cli.up_output import ready_line

                    progress.line(ready_line(want.name, up_result(env, want)))
                if watch:
                    _watch(client, want, progress, path, workspace_folder, config, target, name, ref, docker,
                           json_)
        except KeyboardInterrupt:
            shown = want.name if want is not None else name or ""
            print(f"\nstopped waiting; the environment keeps going: see `flex show {shown}`".rstrip(),
                  file=sys.stderr)
            raise typer.Exit(130) from None
        except FlexError as err:
            if json_:
                print(json.dumps({"outcome": "error", "message": err.message,
                                  "description": err.hint or _ERROR_DESCRIPTION}), flush=True)
            raise
        if shell:
            _shell(env, want, target, _stream(target, server, token))


def _watch(client: FlexClient, want: Desired, progress: Progress, path: str | None, workspace_folder: str | None,
           config: str | None, target: Target, name: str | None, ref: str | None, docker: bool, json_: bool) -> None:
    import watchfiles

    from flex.cli.up_source import desired
    from flex.cli.up_wait import is_ready, wait_ready
    from flex.errors import FlexError

    paths = _watched(want)
    if not paths:
        progress.line("--watch: nothing local to watch (a git source)")
        return
    # the watcher exists once watch() first returns (a timeout, with nothing changed): only then is "watching"
    # true, and an edit made before that is found by reading the files again. A save that changes nothing
    # (the same bytes, or the tail of an edit already applied) is not a change.
    armed = broken = False
    for changes in watchfiles.watch(*paths, debounce=300, step=50, rust_timeout=1000, yield_on_timeout=True):
        try:
            if not armed:
                armed = True
                progress.line(f"watching {', '.join(paths)} (Ctrl-C to stop)")
            elif not changes:
                continue
            again = desired(path, workspace_folder, config, remote=not target.local, name=name, ref=ref, docker=docker)
            if again.spec == want.spec:
                if broken:
                    broken = False
                    progress.line(f"the config is valid again, as environment {want.name} has it: nothing to do")
                continue
            broken = False
            files = sorted({c[1] for c in changes}) or [str(again.config_file or paths[0])]
            progress.line(f"ConfigChanged: {', '.join(files)}")
            env = apply(client, again, progress)
            if not is_ready(env):
                env = wait_ready(client, again.name, env.metadata.generation, progress)
                progress.done(f"environment {again.name} is ready")
            want = again  # applied: a save that failed is tried again at the next one
            if json_:
                print(json.dumps(up_result(env, want, local=target.local)), flush=True)
        except FlexError as err:  # a broken edit: say so and keep watching for the fix
            from flex.cli.main import report

            broken = True
            report(err)
