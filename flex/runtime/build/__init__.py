"""The Dockerfile builder: ``build(BuildOptions) -> BuildResult``, like `buildah bud` on flex's runtime.

Knows nothing of devcontainer.json. Callers get the runtime the way `flex image pull` does: FLEX_HOME
from the environment (``Home.open()``), ownership from the caller's uid (root: unshifted, a user:
rootless); pass ``home`` to use another. See docs/build.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BuildOptions", "BuildResult", "build"]


@dataclass
class BuildOptions:
    context: Path                      # the build context directory
    dockerfile: Path | None = None     # default: context/Dockerfile
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, Path] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None   # each output line of the build, as it comes
    compression: str = "zstd"          # or "gzip"
    home: Path | None = None           # FLEX_HOME (default: as `flex image pull` finds it)
    dockerfile_text: str | None = None  # the Dockerfile itself (``dockerfile`` then only names it in errors)


@dataclass
class BuildResult:
    image_id: str          # the config digest
    manifest_digest: str
    names: list[str]


def build(opts: BuildOptions) -> BuildResult:
    from flex.runtime.build.run_build import run_build

    return run_build(opts)
