"""`flex runner ...`: what an admin (or a personal runner's owner) does to runners through the REST API.

ls, join-token, cordon, uncordon, drain, rm, rotate, revoke. `flex runner join/run/status` belong to the
runner itself and live with it, not here. Runners are named by name or id.
"""

from __future__ import annotations

import json

import typer

from flex.cli.env import _DEBUG, _OUTPUT, _SERVER, _TOKEN, _client, _pairs

__all__ = ["register"]

_RUNNER = typer.Argument(..., help="Runner name or id.")


def register(app: typer.Typer) -> None:
    from flex.cli import runner_agent

    group = typer.Typer(name="runner", help="Join this machine as a runner and run it; manage runners on a control "
                        "plane.", no_args_is_help=True)
    app.add_typer(group, name="runner")
    runner_agent.add_commands(group)  # join, run, status: this machine's runner

    @group.command("ls")
    def ls(output: str = _OUTPUT, server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG) -> None:
        """List runners (an admin sees all; a user their own)."""
        with _client(server, token) as c:
            runners = c.list_runners().items
        if output == "json":
            typer.echo(json.dumps([r.to_wire() for r in runners], indent=2))
            return
        typer.echo(f"{'NAME':<20} {'KIND':<8} {'STATE':<10} {'OWNER':<12} {'ENVS':>4}  {'CPUS':>9}  ID")
        for r in runners:
            state = f"{r.state},cordoned" if r.cordoned else r.state
            cpus = f"{r.allocated.cpus:g}/{r.capacity.cpus:g}"
            typer.echo(f"{r.name:<20} {r.kind:<8} {state:<10} {r.owner or '-':<12} {r.environments:>4}  "
                       f"{cpus:>9}  {r.id}")

    @group.command("join-token")
    def join_token(
        owner: str = typer.Option(None, "--owner", help="A personal runner of this user (users: yourself)."),
        user: list[str] = typer.Option(None, "--user", help="Share only with this user, repeatable."),
        group_: list[str] = typer.Option(None, "--group", help="Share only with this group, repeatable."),
        label: list[str] = typer.Option(None, "--label", "-l",
                                        help="KEY=VALUE the runner may declare (VALUE * for any), repeatable."),
        max_cpus: float = typer.Option(None, "--max-cpus", help="Most cpus the runner may declare."),
        max_memory: str = typer.Option(None, "--max-memory", help="Most memory, e.g. 64Gi."),
        max_disk: str = typer.Option(None, "--max-disk", help="Most disk, e.g. 1Ti."),
        server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """Make a single-use join token that grants a runner its owner or scope, labels and capacity."""
        from flex.errors import UsageError

        grant: dict[str, object] = {"owner": owner, "users": user or [], "groups": group_ or [],
                                    "labels": _pairs(label, "--label")}
        limits = {"cpus": max_cpus, "memory": max_memory, "disk": max_disk}
        if any(v is not None for v in limits.values()):
            if any(v is None for v in limits.values()):
                raise UsageError("give all of --max-cpus, --max-memory and --max-disk, or none")
            grant["maxCapacity"] = limits
        with _client(server, token) as c:
            made = c.create_join_token(grant)
        typer.echo(made.token)
        typer.echo(f"single use, until {made.expires_at.isoformat()}", err=True)

    def _verb(verb: str, done: str, doc: str) -> None:
        def run(runner: str = _RUNNER, output: str = _OUTPUT, server: str = _SERVER, token: str = _TOKEN,
                debug: bool = _DEBUG) -> None:
            with _client(server, token) as c:
                r = getattr(c, f"{verb}_runner")(runner)
            if output == "json":
                typer.echo(json.dumps(r.to_wire(), indent=2))
            else:
                typer.echo(f"{done} {r.name}")

        run.__doc__ = doc
        group.command(verb)(run)

    _verb("cordon", "cordoned", "Take no new environments on this runner (those on it stay).")
    _verb("uncordon", "uncordoned", "Take new environments on this runner again.")
    _verb("drain", "drained", "Cordon, and move each of its environments to another runner (as flex move does).")
    _verb("revoke", "revoked the credential of",
          "Revoke its credential at once; the runner and its environments stay (rotate issues a new one).")

    @group.command("rotate")
    def rotate(runner: str = _RUNNER, server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG) -> None:
        """Issue a new credential (printed once); the old one stops working."""
        with _client(server, token) as c:
            fresh = c.rotate_runner(runner)
        typer.echo(fresh.credential)
        if fresh.expires_at is not None:
            typer.echo(f"valid until {fresh.expires_at.isoformat()}, renewed by heartbeats", err=True)

    @group.command("rm")
    def rm(runner: str = _RUNNER, server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG) -> None:
        """Delete a runner and its credential (refused while environments are on it)."""
        with _client(server, token) as c:
            c.delete_runner(runner)
        typer.echo(f"deleted {runner}")
