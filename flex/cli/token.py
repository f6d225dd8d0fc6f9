"""`flex token create|ls|rm`, `flex user create|whoami|groups`, `flex version`: what the API can do with users
and tokens, with no curl; on the local daemon or the control plane of --server / `flex login`."""

from __future__ import annotations

import json

import typer

from flex.cli.envs import SERVER, TOKEN

__all__ = ["register"]

_JSON = typer.Option(False, "--json", help="Print JSON.")


def _ts(value: object) -> str:
    return str(value).replace("+00:00", "Z")[:20] if value else "-"


def register(app: typer.Typer) -> None:
    tokens = typer.Typer(name="token", no_args_is_help=True, help="Your API tokens: create, list, remove.")
    users = typer.Typer(name="user", no_args_is_help=True, help="Users (admins): create, set groups; whoami.")
    app.add_typer(tokens, name="token")
    app.add_typer(users, name="user")

    @tokens.command("create")
    def token_create(name: str = typer.Option("token", "--name", help="A name to recognise it by."),
                     read_only: bool = typer.Option(False, "--read-only", help="Only the read scope."),
                     expires: str = typer.Option(None, "--expires", help="ISO 8601 time it stops working."),
                     json_: bool = _JSON, server: str = SERVER, token: str = TOKEN) -> None:
        """Create a token; it is printed once, on stdout."""
        import sys

        from flex.api import TokenCreate
        from flex.cli.target import connect

        body = TokenCreate.model_validate({"name": name, "scopes": ["read"] if read_only else ["read", "write"],
                                           "expiresAt": expires})
        client, _ = connect(server, token)
        with client:
            made = client.create_token(body)
        if json_:
            typer.echo(json.dumps(made.to_wire(), indent=2))
            return
        print(f"created token {made.id} ({made.name}, {' '.join(made.scopes)}); it is shown only now:",
              file=sys.stderr)
        typer.echo(made.token)

    @tokens.command("ls")
    def token_ls(json_: bool = _JSON, server: str = SERVER, token: str = TOKEN) -> None:
        """List your tokens (never their secrets)."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            items = client.list_tokens().items
        if json_:
            typer.echo(json.dumps([t.to_wire() for t in items], indent=2))
            return
        typer.echo(f"{'ID':<28} {'NAME':<20} {'SCOPES':<12} {'EXPIRES':<21} LAST USED")
        for t in items:
            typer.echo(f"{t.id:<28} {t.name:<20} {','.join(t.scopes):<12} {_ts(t.expires_at):<21} "
                       f"{_ts(t.last_used_at)}")

    @tokens.command("rm")
    def token_rm(token_id: str = typer.Argument(..., help="The token's id (from `flex token ls`)."),
                 server: str = SERVER, token: str = TOKEN) -> None:
        """Revoke a token."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            client.delete_token(token_id)
        typer.echo(f"removed token {token_id}")

    @users.command("create")
    def user_create(name: str = typer.Argument(..., help="The user's name."),
                    admin: bool = typer.Option(False, "--admin", help="An administrator."),
                    group: list[str] = typer.Option([], "--group", help="A group, repeatable."),
                    json_: bool = _JSON, server: str = SERVER, token: str = TOKEN) -> None:
        """Admins: create a user; its first token is printed once, on stdout."""
        import sys

        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            made = client.create_user(name, admin, group)
        if json_:
            typer.echo(json.dumps(made.to_wire(), indent=2))
            return
        print(f"created user {made.name}; its token is shown only now:", file=sys.stderr)
        typer.echo(made.token)

    @users.command("groups")
    def user_groups(name: str = typer.Argument(..., help="The user's name."),
                    group: list[str] = typer.Option([], "--group", help="A group, repeatable (none: no groups)."),
                    json_: bool = _JSON, server: str = SERVER, token: str = TOKEN) -> None:
        """Admins: replace a user's groups."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            user = client.set_groups(name, group)
        typer.echo(json.dumps(user.to_wire(), indent=2) if json_ else
                   f"{user.name}: groups {', '.join(user.groups) or '(none)'}")

    @users.command("whoami")
    def whoami(json_: bool = _JSON, server: str = SERVER, token: str = TOKEN) -> None:
        """Who the token is."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            me = client.whoami()
        typer.echo(json.dumps(me.to_wire(), indent=2) if json_ else f"{me.name}{' (admin)' if me.admin else ''}")

    @app.command("version")
    def version(json_: bool = _JSON) -> None:
        """Print flex's version."""
        import platform

        from flex import __version__

        if json_:
            typer.echo(json.dumps({"version": __version__, "python": platform.python_version()}))
        else:
            typer.echo(f"flex {__version__}")
