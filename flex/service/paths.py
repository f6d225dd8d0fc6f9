"""Where the supervisor keeps definitions, pid files and logs; each overridable for tests and odd layouts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServicePaths"]


@dataclass(frozen=True)
class ServicePaths:
    etc: Path  # services/NAME.json
    run: Path  # NAME.pid (the supervisor), NAME.json (its state); a tmpfs on most hosts, so a reboot clears it
    log: Path  # NAME.log

    @classmethod
    def from_env(cls) -> ServicePaths:
        return cls(etc=Path(os.environ.get("FLEX_ETC") or "/etc/flex"),
                   run=Path(os.environ.get("FLEX_RUN") or "/run/flex"),
                   log=Path(os.environ.get("FLEX_LOG") or "/var/log/flex"))

    def unit(self, name: str) -> Path:
        return self.etc / "services" / f"{name}.json"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def state_file(self, name: str) -> Path:
        return self.run / f"{name}.json"

    def log_file(self, name: str) -> Path:
        return self.log / f"{name}.log"
