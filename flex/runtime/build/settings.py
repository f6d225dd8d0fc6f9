"""Runner-wide build settings: ``/etc/flex/build.toml`` (machine) then ``FLEX_HOME/build.toml`` (this home).

``mounts = ["SRC:DST", ...]`` are bind-mounted read-only into every RUN step, and ``[env]`` is set in
its environment; neither enters a layer, the image config or the cache key (a proxy, a CA bundle, a
package mirror's configuration change how a step reaches the network, not what it builds). Both files
are read when present; the home's entries come after the machine's (an env key set in both: the home's).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from flex.errors import InvalidConfiguration

__all__ = ["MACHINE_SETTINGS", "BuildSettings", "load_settings"]

MACHINE_SETTINGS = Path("/etc/flex/build.toml")


@dataclass
class BuildSettings:
    mounts: list[tuple[Path, str]] = field(default_factory=list)  # (host path, container path), read-only
    env: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # the files these came from


def _read(path: Path, into: BuildSettings) -> None:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise InvalidConfiguration(f"{path}: not a valid TOML file: {err}") from err
    unknown = set(data) - {"mounts", "env"}
    if unknown:
        raise InvalidConfiguration(f"{path}: unknown setting {sorted(unknown)[0]!r}",
                                   hint='build.toml knows mounts = ["SRC:DST", ...] and [env]')
    mounts = data.get("mounts", [])
    if not isinstance(mounts, list) or not all(isinstance(m, str) for m in mounts):
        raise InvalidConfiguration(f"{path}: mounts must be a list of \"SRC:DST\" strings")
    for m in mounts:
        src, sep, dst = m.partition(":")
        dst = dst.removesuffix(":ro")
        if not sep or not src.startswith("/") or not PurePosixPath(dst).is_absolute() or ".." in dst.split("/"):
            raise InvalidConfiguration(f"{path}: mount {m!r}: expected an absolute SRC:DST",
                                       hint='e.g. "/etc/pip.conf:/etc/pip.conf"')
        into.mounts.append((Path(src), dst))
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise InvalidConfiguration(f"{path}: [env] values must be strings")
    into.env.update(env)
    into.files.append(path)


def load_settings(home_root: Path, machine: Path = MACHINE_SETTINGS) -> BuildSettings:
    out = BuildSettings()
    _read(machine, out)
    _read(home_root / "build.toml", out)
    return out
