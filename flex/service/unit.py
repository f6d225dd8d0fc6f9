"""A service definition: the command, its environment, and how long a stop may take. JSON, written atomically."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from flex.atomic import write_atomic
from flex.errors import InvalidConfiguration, NotFound, PermissionDenied, UsageError
from flex.service.paths import ServicePaths

__all__ = ["Unit", "check_name", "load_unit", "remove_unit", "save_unit", "unit_names"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9@._-]{0,62}$")


@dataclass
class Unit:
    name: str
    command: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    stop_timeout: float = 30.0  # SIGTERM, then this long, then SIGKILL (of the main process only)
    user: str | None = None  # run the command as this user (its groups, a clean environment); None: as root

    def __post_init__(self) -> None:
        check_name(self.name)
        if not self.command:
            raise UsageError(f"service {self.name}: no command given", hint="flex service add NAME -- COMMAND ...")


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise UsageError(f"{name!r} is not a service name", hint="lower-case letters, digits and - . _ @")


def save_unit(paths: ServicePaths, unit: Unit) -> None:
    # 0600: the environment may hold a database password
    try:
        (paths.etc / "services").mkdir(parents=True, exist_ok=True)
        write_atomic(paths.unit(unit.name), json.dumps(asdict(unit), indent=2) + "\n", mode=0o600)
    except PermissionError:
        raise PermissionDenied(f"cannot write {paths.unit(unit.name)}: permission denied",
                               hint="run as root, or move the definitions with FLEX_ETC") from None


def load_unit(paths: ServicePaths, name: str) -> Unit:
    check_name(name)
    path = paths.unit(name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"no service {name!r} ({path} does not exist)", hint="flex service ls") from None
    except (OSError, ValueError) as err:
        raise InvalidConfiguration(f"{path}: cannot read it: {err}", hint="remove it and add the service again",
                                   details={"file": str(path)}) from None
    try:
        return Unit(name=name, command=[str(a) for a in data["command"]],
                    environment={str(k): str(v) for k, v in (data.get("environment") or {}).items()},
                    stop_timeout=float(data.get("stop_timeout", 30.0)),
                    user=str(data["user"]) if data.get("user") else None)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InvalidConfiguration(f"{path}: not a service definition ({err})", details={"file": str(path)}) from None


def remove_unit(paths: ServicePaths, name: str) -> None:
    check_name(name)
    paths.unit(name).unlink(missing_ok=True)


def unit_names(paths: ServicePaths) -> list[str]:
    d = paths.etc / "services"
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []
