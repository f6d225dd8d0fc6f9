"""`flex image build`: a Dockerfile → an image in the local store, like `buildah bud` / `docker build`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

__all__ = ["register_build"]


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    import os

    from flex.errors import InvalidArgument

    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"{flag} {item!r}: expected KEY=VALUE")
        if not eq:  # --build-arg K: take it from our environment, as docker does
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def _secrets(items: list[str]) -> dict[str, Path]:
    from flex.errors import InvalidArgument, NotFound

    out: dict[str, Path] = {}
    for item in items:
        fields = dict(part.partition("=")[::2] for part in item.split(","))
        sid, src = fields.get("id", ""), fields.get("src", fields.get("source", ""))
        if not sid or not src:
            raise InvalidArgument(f"--secret {item!r}: expected id=ID,src=FILE")
        path = Path(src).expanduser()
        if not path.is_file():
            raise NotFound(f"--secret {item!r}: {path} is not a file")
        out[sid] = path.resolve()
    return out


def register_build(group: typer.Typer) -> None:
    @group.command("build")
    def build_cmd(context: Path = typer.Argument(..., help="Build context directory"),
                  file: Path = typer.Option(None, "--file", "-f", help="Dockerfile (default: CONTEXT/Dockerfile)"),
                  tag: list[str] = typer.Option([], "--tag", "-t", help="Name the image (repeatable)"),
                  build_arg: list[str] = typer.Option([], "--build-arg", metavar="K=V", help="Set a build arg"),
                  target: str = typer.Option(None, "--target", help="Build up to this stage"),
                  no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the layer cache"),
                  label: list[str] = typer.Option([], "--label", metavar="K=V", help="Add a label to the image"),
                  secret: list[str] = typer.Option([], "--secret", metavar="id=ID,src=FILE",
                                                   help="A secret for RUN --mount=type=secret"),
                  compression: str = typer.Option("zstd", "--compression", help="Layer compression: zstd or gzip"),
                  push: bool = typer.Option(False, "--push", help="Push every -t name to its registry"),
                  as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
                  quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the image id"),
                  debug: bool = typer.Option(False, "--debug", hidden=True)) -> None:
        """Build an image from a Dockerfile (every RUN step in a flex container; every step cached)."""
        from flex.runtime.build import BuildOptions, build

        def show(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        opts = BuildOptions(context=context, dockerfile=file, tags=list(tag),
                            build_args=_pairs(build_arg, "--build-arg"), target=target, no_cache=no_cache,
                            labels=_pairs(label, "--label"), secrets=_secrets(secret),
                            progress=None if quiet or as_json else show, compression=compression)
        res = build(opts)
        if push:
            from flex.errors import UsageError

            if not res.names:
                raise UsageError("--push needs a name to push to", hint="give -t REGISTRY/REPO:TAG")
            from flex.runtime.base.home import Home
            from flex.runtime.base.progress import NullProgress
            from flex.runtime.images.store import ImageStore
            from flex.runtime.transfer.push import push as push_image
            from flex.runtime.unpack.userns import store_ownership

            store = ImageStore(Home.open(), ownership=store_ownership())
            for name in res.names:
                if not quiet and not as_json:
                    show(f"pushing {name}")
                push_image(store, name, name, progress=NullProgress())
        if as_json:
            print(json.dumps({"imageId": res.image_id, "manifestDigest": res.manifest_digest, "names": res.names},
                             indent=2))
        elif quiet:
            print(res.image_id)
        else:
            for name in res.names:
                print(f"{name}@{res.manifest_digest}")
            if not res.names:
                print(res.image_id)
