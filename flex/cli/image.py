"""`flex image ...`: build, pull, push, ls, inspect, rm, prune, bootstrap, import, export, login, logout.

Only typer is imported at module level so `flex image --help` stays fast; httpx, rich and the runtime
modules are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from flex.runtime.images.store import Image, ImageStore

__all__ = ["register"]

_DEBUG = typer.Option(False, "--debug", hidden=True)
_QUIET = typer.Option(False, "--quiet", "-q", help="Print only the result.")


def _store() -> ImageStore:
    from flex.runtime.base.home import Home
    from flex.runtime.images.store import ImageStore
    from flex.runtime.unpack.userns import store_ownership

    return ImageStore(Home.open(), ownership=store_ownership())


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _summary(img: Image) -> dict[str, Any]:
    cfg = img.config.get("config") or {}
    return {
        "name": img.name,
        "digest": img.manifest_digest,
        "target": img.target,
        "mediaType": img.manifest.media_type,
        "size": img.size,
        "created": img.config.get("created"),
        "platform": f"{img.config.get('os', '?')}/{img.config.get('architecture', '?')}",
        "config": {"digest": img.manifest.config.digest, "env": cfg.get("Env"), "cmd": cfg.get("Cmd"),
                   "entrypoint": cfg.get("Entrypoint"), "workingDir": cfg.get("WorkingDir"),
                   "user": cfg.get("User")},
        "layers": [{"digest": lay.digest, "mediaType": lay.media_type, "size": lay.size, "diffId": diff}
                   for lay, diff in zip(img.manifest.layers, img.diff_ids, strict=True)],
        "snapshot": img.top_snapshot,
    }


def _lowerdirs(store: ImageStore, img: Image) -> list[str]:
    return [str(p) for p in store.snapshots.lowers(img.top_snapshot)] if img.top_snapshot else []


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="image", help="Manage OCI images: pull, push, list, bootstrap Debian bases.",
                        no_args_is_help=True)

    @group.command("pull")
    def pull_cmd(ref: str = typer.Argument(..., help="Image reference, e.g. debian:bookworm or host:port/repo:tag"),
                 platform: str = typer.Option(None, "--platform", metavar="OS/ARCH[/VARIANT]",
                                              help="Which image of a multi-platform index (default: this host's)"),
                 quiet: bool = _QUIET, debug: bool = _DEBUG) -> None:
        """Download an image and unpack it into snapshots."""
        from flex.runtime.base.progress import for_terminal
        from flex.runtime.images.store import parse_platform
        from flex.runtime.transfer.pull import pull

        want = parse_platform(platform) if platform is not None else None
        progress = for_terminal(quiet)
        try:
            img = pull(_store(), ref, progress=progress, platform=want)
        finally:
            progress.close()
        print(f"{img.name}@{img.manifest_digest}" if not quiet else img.manifest_digest)

    @group.command("push")
    def push_cmd(name: str = typer.Argument(..., help="Local image name"),
                 ref: str = typer.Argument(..., help="Destination reference, e.g. host:port/repo:tag"),
                 quiet: bool = _QUIET, debug: bool = _DEBUG) -> None:
        """Upload a local image to a registry."""
        from flex.runtime.base.progress import for_terminal
        from flex.runtime.transfer.push import push

        progress = for_terminal(quiet)
        try:
            digest = push(_store(), name, ref, progress=progress)
        finally:
            progress.close()
        print(digest)

    @group.command("ls")
    def ls_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON."), debug: bool = _DEBUG) -> None:
        """List local images."""
        images = _store().list()
        if as_json:
            print(json.dumps([{"name": i.name, "digest": i.manifest_digest, "size": i.size,
                               "created": i.config.get("created")} for i in images], indent=2))
            return
        rows = [("NAME", "DIGEST", "SIZE", "CREATED")]
        rows += [(i.name, i.manifest_digest[7:19], _size(i.size), str(i.config.get("created") or "-"))
                 for i in images]
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())

    @group.command("inspect")
    def inspect_cmd(ref: str = typer.Argument(..., help="Image name or digest"),
                    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
                    debug: bool = _DEBUG) -> None:
        """Show an image's manifest digest, config, layers and size."""
        store = _store()
        img = store.get(ref)
        data = _summary(img)
        data["lowerdirs"] = _lowerdirs(store, img)
        data["ownership"] = store.snapshots.stat(img.top_snapshot).ownership if img.top_snapshot else None
        if as_json:
            print(json.dumps(data, indent=2))
            return
        print(f"name:      {data['name']}")
        print(f"digest:    {data['digest']}")
        print(f"platform:  {data['platform']}")
        print(f"size:      {_size(data['size'])}")
        print(f"created:   {data['created'] or '-'}")
        cfg = data["config"]
        print(f"config:    {cfg['digest']}")
        for key in ("entrypoint", "cmd", "workingDir", "user"):
            if cfg[key]:
                print(f"  {key}: {json.dumps(cfg[key])}")
        for env in cfg["env"] or []:
            print(f"  env: {env}")
        print(f"layers:    {len(data['layers'])}")
        for lay in data["layers"]:
            print(f"  {lay['digest']}  {_size(lay['size'])}")

    @group.command("rm")
    def rm_cmd(refs: list[str] = typer.Argument(..., help="Image names or digests"),
               debug: bool = _DEBUG) -> None:
        """Remove image names (the data goes at the next `flex image prune`)."""
        store = _store()
        for ref in refs:
            print(f"untagged {store.remove(ref)}")

    @group.command("prune")
    def prune_cmd(dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
                  build_cache: bool = typer.Option(False, "--build-cache",
                                                   help="Also empty the layer cache of `flex image build`."),
                  debug: bool = _DEBUG) -> None:
        """Remove every blob and snapshot no image, container or running pull needs."""
        from flex.runtime.gc.collect import collect

        store = _store()
        if build_cache and not dry_run:
            from flex.runtime.build.cache import BuildCache

            print(f"forgot {BuildCache(store.db).clear()} build cache entr(y/ies)")
        res = collect(store, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        print(f"{verb} {len(res.blobs)} blob(s), {len(res.snapshots)} snapshot(s), {_size(res.freed)}")

    @group.command("bootstrap")
    def bootstrap_cmd(name: str = typer.Argument(..., help="Name for the new image"),
                      suite: str = typer.Option("bookworm", "--suite", help="Debian suite"),
                      variant: str = typer.Option("minbase", "--variant", help="mmdebstrap variant"),
                      include: str = typer.Option("", "--include", help="Extra packages, comma-separated"),
                      quiet: bool = _QUIET, debug: bool = _DEBUG) -> None:
        """Build a Debian base image with mmdebstrap (offline machines, tests)."""
        from flex.runtime.base.progress import LineProgress, NullProgress
        from flex.runtime.transfer.bootstrap import bootstrap

        pkgs = [p.strip() for p in include.split(",") if p.strip()]
        start = time.monotonic()
        img = bootstrap(_store(), name, suite=suite, variant=variant, include=pkgs,
                        progress=NullProgress() if quiet else LineProgress())
        if not quiet:
            print(f"built in {time.monotonic() - start:.1f}s", file=sys.stderr)
        print(f"{img.name}@{img.manifest_digest}")

    @group.command("import")
    def import_cmd(tar: Path = typer.Argument(..., help="OCI layout archive (e.g. from skopeo oci-archive:)"),
                   name: str = typer.Argument(..., help="Name for the imported image"),
                   debug: bool = _DEBUG) -> None:
        """Import an OCI layout archive."""
        from flex.runtime.transfer.archive import import_image

        img = import_image(_store(), tar, name)
        print(f"{img.name}@{img.manifest_digest}")

    @group.command("export")
    def export_cmd(name: str = typer.Argument(..., help="Local image name"),
                   tar: Path = typer.Argument(..., help="Archive to write; - for stdout"),
                   debug: bool = _DEBUG) -> None:
        """Export an image as an OCI layout archive."""
        from flex.runtime.transfer.archive import export_image

        if str(tar) == "-":
            from flex.errors import UsageError

            if sys.stdout.isatty():  # as `docker save` refuses
                raise UsageError("refusing to write an image archive to a terminal",
                                 hint=f"redirect stdout (flex image export {name} - > image.tar) or name a file")
            sys.stdout.flush()
            export_image(_store(), name, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        img = export_image(_store(), name, tar)
        print(f"{img.name}@{img.manifest_digest} → {tar}")

    @group.command("login")
    def login_cmd(registry: str = typer.Argument(..., help="Registry host[:port]"),
                  username: str = typer.Option(..., "--username", "-u"),
                  password: str = typer.Option(None, "--password", "-p", help="Prefer --password-stdin"),
                  password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin"),
                  debug: bool = _DEBUG) -> None:
        """Store credentials for a registry (checked against it first)."""
        from flex.errors import UsageError
        from flex.runtime.remotes.auth import Credentials, save_login
        from flex.runtime.remotes.registry import Registry

        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise UsageError("no password given", hint="use --password-stdin (or -p)")
        creds = Credentials(username, password)
        with Registry(registry, credentials=creds) as reg:
            reg.request("GET", "/v2/", scope="registry:catalog:*", what="login")
        path = save_login(registry, creds)
        print(f"login succeeded; credentials stored in {path}")

    @group.command("logout")
    def logout_cmd(registry: str = typer.Argument(..., help="Registry host[:port]"), debug: bool = _DEBUG) -> None:
        """Forget the stored credentials of a registry."""
        from flex.errors import NotFound
        from flex.runtime.remotes.auth import remove_login

        if not remove_login(registry):
            raise NotFound(f"not logged in to {registry}")
        print(f"removed credentials for {registry}")

    from flex.cli.image_build import register_build

    register_build(group)
    app.add_typer(group)
