"""`flex build`: a devcontainer's image, like `devcontainer build` (image or Dockerfile, then the features),
on flex's runtime; no Docker daemon.

With ``--json`` one line on stdout: ``{"outcome": "success", "imageName": [...]}``, or
``{"outcome": "error", "message": ..., "description": "An error occurred building the container."}``
(then the usual one-line error on stderr and the error kind's exit code). Build output goes to stderr.
"""

from __future__ import annotations

import json
import sys

import typer

__all__ = ["register"]

_DESCRIPTION = "An error occurred building the container."


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        workspace_folder: str = typer.Option(None, "--workspace-folder", "-w", metavar="DIR",
                                             help="Workspace folder (default: the current directory)."),
        config: str = typer.Option(None, "--config", "-c", metavar="FILE",
                                   help="devcontainer.json to use instead of looking it up."),
        image_name: list[str] = typer.Option([], "--image-name", metavar="NAME",
                                             help="Name the image (repeatable)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild every step."),
        push: bool = typer.Option(False, "--push", help="Push the image to its --image-name registries."),
        as_json: bool = typer.Option(False, "--json", help="Print the outcome as one JSON object."),
        remote_user_uid: str = typer.Option(None, "--remote-user-uid", metavar="UID[:GID]",
                                            help="updateRemoteUserUID: give remoteUser these ids (the "
                                                 "workspace owner's inside the container)."),
        no_lockfile: bool = typer.Option(False, "--no-lockfile", help="Do not write devcontainer-lock.json."),
        frozen_lockfile: bool = typer.Option(False, "--frozen-lockfile",
                                             help="Fail when devcontainer-lock.json would change."),
        debug: bool = typer.Option(False, "--debug", hidden=True),
    ) -> None:
        """Build the devcontainer's image: its image or Dockerfile, then its features."""
        from flex.errors import FlexError, UsageError

        try:
            if push and not image_name:
                raise UsageError("--push needs an --image-name to push to",
                                 hint="e.g. --image-name registry.example.com/team/devcontainer:latest")
            ids = _ids(remote_user_uid) if remote_user_uid is not None else None
            names = _build(workspace_folder, config, image_name, no_cache, push, not no_lockfile, frozen_lockfile,
                           ids)
        except FlexError as err:
            if as_json:
                sys.stdout.write(json.dumps({"outcome": "error", "message": err.message,
                                             "description": _DESCRIPTION}) + "\n")
            raise
        if as_json:
            sys.stdout.write(json.dumps({"outcome": "success", "imageName": names}) + "\n")
        else:
            print(f"built {', '.join(names)}")


def _ids(text: str) -> tuple[int, int]:
    from flex.errors import InvalidArgument

    uid, _, gid = text.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit() or max(int(uid), int(gid or uid)) >= 2**32 - 1:
        raise InvalidArgument(f"--remote-user-uid {text!r}: expected UID or UID:GID, numbers",
                              hint="e.g. --remote-user-uid 1000:1000")
    return int(uid), int(gid or uid)


def _build(workspace_folder: str | None, config: str | None, image_names: list[str], no_cache: bool,
           push: bool, lockfile: bool, frozen_lockfile: bool = False,
           remote_user_uid: tuple[int, int] | None = None) -> list[str]:
    from flex.devcontainer.config import read_config
    from flex.runner.build.image import build_devcontainer_image

    resolved = read_config(workspace_folder, config)
    for warning in resolved.warnings:
        print(f"warning: {resolved.workspace.config_file}: {warning}", file=sys.stderr)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    image = build_devcontainer_image(resolved, no_cache=no_cache, progress=progress, image_names=image_names,
                                     lockfile=lockfile, frozen_lockfile=frozen_lockfile,
                                     remote_user_uid=remote_user_uid)
    if push:
        from flex.runner.build.image import open_image_store
        from flex.runtime.transfer.push import push as push_image

        store = open_image_store()
        for name in image_names:
            progress(f"pushing {name}")
            push_image(store, image.name, name)
    return list(image_names) or [image.name]
