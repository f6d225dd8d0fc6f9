"""`flex runner join|run|status`: this machine as a runner. The admin verbs (ls, cordon, ...) live in their
own module; both add commands to the one `runner` group (``add_commands``)."""

from __future__ import annotations

import typer

__all__ = ["add_commands", "register"]


def _labels(values: list[str]) -> dict[str, str]:
    from flex.errors import UsageError

    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: expected KEY=VALUE", hint="e.g. --label zone=eu")
        out[key] = value
    return out


def _idle_timeout(value: str) -> int:
    """``--idle-timeout 30m`` → 1800 (seconds; 0: never), one clear line for anything else."""
    from pydantic import TypeAdapter, ValidationError

    from flex.api.runners import IdleTimeout
    from flex.errors import UsageError

    try:
        return int(TypeAdapter(IdleTimeout).validate_python(int(value) if value.isdigit() else value))
    except ValidationError:
        raise UsageError(f"--idle-timeout {value!r}: expected a duration up to 366 days",
                         hint="e.g. 90s, 30m, 2h, 1d, or 0 for never") from None


def _default_name() -> str:
    import re
    import socket

    name = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:63].strip("-")
    return name or "runner"


def _ago(ts: float | None) -> str:
    import time

    if not ts:
        return "never"
    s = int(time.time() - ts)
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def add_commands(group: typer.Typer) -> None:
    @group.command("join")
    def join(url: str = typer.Argument(..., help="The control plane, e.g. http://host:8080"),
             token: str = typer.Option(..., "--token", help="A join token from an admin."),
             name: str = typer.Option(None, "--name", help="The runner's name (default: the host name)."),
             label: list[str] = typer.Option([], "--label", help="K=V, for runner selectors (repeat)."),
             kind: str = typer.Option(None, "--kind", help="desktop | vm (default: vm as root, else desktop)."),
             ) -> None:
        """Join a control plane: exchange a join token for this runner's credential (kept 0600)."""
        import os
        import sys

        from flex.client import FlexClient
        from flex.errors import AlreadyExists, UsageError
        from flex.home import flex_home
        from flex.runner.capacity import id_ranges, machine_capacity
        from flex.runner.credential import Credential, credential_path, runner_dir, save_credential

        kind = kind or ("vm" if os.geteuid() == 0 else "desktop")
        if kind not in ("desktop", "vm"):
            raise UsageError(f"--kind {kind!r}: expected desktop or vm")
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"{url!r} is not an http(s) URL", hint="e.g. flex runner join http://host:8080 --token T")
        home = flex_home()
        existing = credential_path(home)
        if existing.exists():
            raise AlreadyExists(f"this machine already joined as a runner ({existing})",
                                hint=f"to join again, remove {existing} first")
        labels = _labels(label)
        runner_dir(home)
        with FlexClient(url, None) as client:
            rootless, ranges = id_ranges()
            answer = client.join(token, name or _default_name(), kind, machine_capacity(home), labels,
                                 rootless=rootless, id_ranges=ranges)
        path = save_credential(home, Credential(url=url.rstrip("/"), runner_id=answer.id,
                                                name=name or _default_name(), kind=kind,
                                                credential=answer.credential))
        print(f"joined as runner {answer.id}; credential in {path} (mode 0600)", file=sys.stderr)
        print(answer.id)

    @group.command("run")
    def run(workers: int = typer.Option(2, "--workers", min=1, max=64, help="Reconciles at once."),
            resync: float = typer.Option(60.0, "--resync", min=1.0, help="Seconds between full lists."),
            heartbeat: float = typer.Option(10.0, "--heartbeat", min=0.5, help="Seconds between heartbeats."),
            max_builds: int = typer.Option(1, "--max-builds", min=1, max=64,
                                           help="Image pulls and builds at once (they are CPU and disk heavy)."),
            min_free_disk: str = typer.Option("2Gi", "--min-free-disk", metavar="SIZE",
                                              help="Below this much free disk the runner reports DiskPressure and "
                                                   "takes no new environments."),
            idle_timeout: str = typer.Option(None, "--idle-timeout", envvar="FLEX_RUNNER_IDLE_TIMEOUT",
                                             help="Stop this runner's environments unused this long (90s, 30m, 2h; "
                                                  "0: never) unless their spec sets idleTimeout."),
            ) -> None:
        """Run the runner in the foreground (logs on stderr; SIGTERM stops it, environments keep running)."""
        import logging
        import sys

        from flex.api.wire import parse_quantity
        from flex.errors import UsageError
        from flex.home import flex_home
        from flex.runner.agent import Agent, AgentOptions
        from flex.runner.credential import load_credential

        try:
            min_free = int(parse_quantity(min_free_disk))
        except (TypeError, ValueError):
            raise UsageError(f"--min-free-disk {min_free_disk!r}: expected a size", hint="e.g. 2Gi, 500Mi") from None
        idle = _idle_timeout(idle_timeout) if idle_timeout is not None else None
        home = flex_home()
        cred = load_credential(home)
        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)
        code = Agent(home, cred, AgentOptions(workers=workers, resync=resync, heartbeat=heartbeat,
                                                 max_builds=max_builds, min_free_disk=min_free,
                                                 idle_timeout=idle)).run()
        raise typer.Exit(code)

    @group.command("status")
    def status(json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """What the runner on this machine is doing: its identity, heartbeat, environments."""
        import json
        import os

        from flex.home import flex_home
        from flex.runner.agent import agent_status_path
        from flex.runner.credential import load_credential

        home = flex_home()
        cred = load_credential(home)
        data: dict[str, object] = {"runnerId": cred.runner_id, "name": cred.name, "kind": cred.kind,
                                   "url": cred.url, "running": False}
        try:
            agent = json.loads(agent_status_path(home).read_text())
            os.kill(int(agent["pid"]), 0)
        except PermissionError:
            pass  # alive, and another user's
        except (OSError, ValueError, KeyError):
            agent = None
        if agent is not None:
            data.update(agent)
            data["running"] = True
        if json_:
            print(json.dumps(data, indent=2))
            return
        print(f"runner {cred.name} ({cred.runner_id}, {cred.kind}) of {cred.url}")
        if agent is None:
            print("not running (start it with: flex runner run)")
            return
        print(f"running as pid {agent['pid']}; heartbeat {_ago(agent.get('lastHeartbeat'))}"
              + (f" (failing: {agent['heartbeatError']})" if agent.get("heartbeatError") else "")
              + f"; watching from resourceVersion {agent.get('watchingFrom')}; {agent.get('queued', 0)} queued")
        if agent.get("diskPressure"):
            print(f"DiskPressure: {agent.get('diskFree', 0) / 2**30:.1f} GiB free, under --min-free-disk")
        envs: dict[str, dict[str, object]] = agent.get("environments") or {}
        for env_id, e in envs.items():
            err = f"  error: {e['error']}" if e.get("error") else ""
            print(f"  {env_id}  {e.get('phase') or '-'}  reconciled {_ago(e.get('lastReconcile'))}{err}")  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="runner", help="This machine as a runner: join a control plane, run, status.",
                        no_args_is_help=True)
    add_commands(group)
    app.add_typer(group, name="runner")
