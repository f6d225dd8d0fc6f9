"""`flex ssh ENV [CMD...]`, `flex ssh --stdio ENV` and `flex config-ssh [--remove]` (issue 15; docs/access.md).

`flex ssh` runs the system `ssh` with `flex ssh --stdio` as its ProxyCommand: that opens the environment's SSH
WebSocket (through the control plane and its runner's tunnel; the local daemon when none is configured, as
flex/cli/target.py decides), writes the host key the control plane reports for it to flex's known_hosts (before
any SSH byte flows, so ssh checks against it: no trust-on-first-use prompt), then copies stdin and stdout to it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import threading

import typer

from flex.cli.env import _DEBUG, _SERVER, _TOKEN

__all__ = ["HOST_KEY_HEADER", "register", "ssh_argv", "stdio"]

HOST_KEY_HEADER = "X-Flex-Ssh-Host-Key"


def _env_name(host: str) -> str:
    from flex.cli.ssh_config import SUFFIX

    return host[:-len(SUFFIX)] if host.endswith(SUFFIX) else host


def stdio(server: str, token: str | None, name: str) -> int:
    """Carry our stdin and stdout to environment ``name``'s SSH server until either side ends."""
    from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

    from flex.cli.ssh_config import remember_host_key
    from flex.client.access import connect_environment
    from flex.errors import Unavailable

    ws = connect_environment(server, token, name, "ssh")
    key = ws.response.headers.get(HOST_KEY_HEADER) if ws.response is not None else None
    if key:
        remember_host_key(name, key)

    def up() -> None:
        with contextlib.suppress(Exception):
            while data := os.read(0, 64 * 1024):
                ws.send(data)
        with contextlib.suppress(Exception):
            ws.close()

    threading.Thread(target=up, name="stdin", daemon=True).start()
    out = sys.stdout.buffer
    try:
        for message in ws:
            if isinstance(message, bytes):
                out.write(message)
                out.flush()
    except ConnectionClosedOK:
        pass
    except ConnectionClosed as closed:
        reason = closed.rcvd.reason if closed.rcvd is not None else ""
        raise Unavailable(reason or "the SSH connection to the environment broke off",
                          hint="the runner may be restarting; connect again in a few seconds") from None
    except BrokenPipeError:
        pass
    rcvd = ws.protocol.close_rcvd
    if rcvd is not None and rcvd.code != 1000 and rcvd.reason:
        raise Unavailable(rcvd.reason, hint="the runner may be restarting; connect again in a few seconds")
    return 0


def ssh_argv(name: str, server: str | None, command: list[str], extra: list[str]) -> list[str]:
    from flex.cli.ssh_config import SUFFIX, known_hosts_path

    proxy = f"{shlex.quote(sys.executable)} -m flex ssh --stdio"
    if server:
        proxy += f" --server {shlex.quote(server)}"
    return ["ssh", "-o", f"ProxyCommand={proxy} %n", "-o", f"UserKnownHostsFile={known_hosts_path()}",
            "-o", "StrictHostKeyChecking=yes", *extra, name + SUFFIX, *command]


def register(app: typer.Typer) -> None:
    @app.command("ssh", context_settings={"allow_interspersed_args": False})
    def ssh(
        name: str = typer.Argument(..., help="Environment name (ENV or ENV.flex)."),
        command: list[str] = typer.Argument(None, help="A command to run instead of a login shell."),
        use_stdio: bool = typer.Option(False, "--stdio", help="Carry stdin/stdout to the environment's SSH "
                                                              "server (what ssh's ProxyCommand runs)."),
        forward_agent: bool = typer.Option(False, "-A", "--forward-agent", help="Forward the SSH agent."),
        local: list[str] = typer.Option([], "-L", help="[BIND:]PORT:HOST:HOSTPORT, as ssh -L."),
        server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """SSH into an environment with the system ssh client (scp, sftp and ssh -L work through `flex config-ssh`)."""
        from flex.cli.target import endpoint, resolve

        name = _env_name(name)
        if use_stdio:
            url, tok = endpoint(server, token)
            raise typer.Exit(stdio(url, tok, name))
        import shutil

        from flex.errors import FailedPrecondition

        if shutil.which("ssh") is None:
            raise FailedPrecondition("the ssh client is not installed", hint="install OpenSSH's client")
        target = resolve(server, token)
        env = dict(os.environ)
        if token:
            env["FLEX_TOKEN"] = token  # for the ProxyCommand, through its environment: never on a command line
        extra = [*(["-A"] if forward_agent else []), *(a for spec in local for a in ("-L", spec))]
        argv = ssh_argv(name, server if target.server is not None and server else None, list(command or []), extra)
        sys.stdout.flush()
        os.execvpe("ssh", argv, env)

    @app.command("config-ssh")
    def config_ssh(
        remove: bool = typer.Option(False, "--remove", help="Remove flex's block from ~/.ssh/config."),
        server: str = _SERVER, debug: bool = _DEBUG,
    ) -> None:
        """Add (or update) a managed `Host *.flex` block in ~/.ssh/config, so `ssh ENV.flex` and VS Code
        Remote-SSH reach environments; --remove takes it out and leaves the rest of the file as it was."""
        from flex.cli.ssh_config import managed_block, remove_block, ssh_config_path, with_block, write_config

        path = ssh_config_path()
        try:
            old = path.read_text()
        except FileNotFoundError:
            old = ""
        new = remove_block(old) if remove else with_block(old, managed_block(server))
        if new != old:
            write_config(path, new)
        if remove:
            print(f"Removed flex's block from {path}" if new != old else f"No flex block in {path}")
        else:
            print(f"{'Updated' if new != old else 'Up to date:'} {path}: `ssh ENV.flex` reaches environment ENV")
